"""The sentences the chapters print about their numbers say what the tables say."""
import pandas as pd
import pytest

from zsr_lab import claims


def _sweep():
    rows = []
    for dataset, accuracies in {"digits": [90, 60, 40, 10, 0], "faces": [80, 75, 70, 50, 30]}.items():
        rows += [{"dataset": dataset, "eps": eps, "attack": "PGD-10", "robust_accuracy": float(a)}
                 for eps, a in zip([0, 1, 2, 4, 8], accuracies)]
    return pd.DataFrame(rows)


def test_first_budget_below_half_is_found_per_set_and_for_the_mean():
    text = claims.first_budget_below_half(_sweep())
    # mean: 85 clean, 67.5, 55, 30 (< 42.5 first at 4), 15
    assert "85.0 % clean, 67.5 % at 1/255, 15.0 % at 8/255; first below half of clean at 4/255" in text
    assert "digits: 2/255" in text and "faces: 8/255" in text  # 40 < 45 at 2; 30 < 40 only at 8
    never = _sweep().assign(robust_accuracy=lambda t: t.robust_accuracy.where(t.eps == 0, 70.0))
    assert "digits: not by 8/255" in claims.first_budget_below_half(never)
    with pytest.raises(ValueError, match="ε = 0"):
        claims.first_budget_below_half(_sweep()[lambda t: t.eps > 0])


def test_fine_tuning_change_reports_the_mean_and_the_extremes():
    rows = []
    for method, clean, robust in (("CLIP", [90, 80, 70], [10, 20, 30]), ("TeCoA", [70, 78, 40], [50, 22, 35])):
        rows += [{"method": method, "dataset": d, "eps": 4.0, "attack": "suite", "clean_accuracy": float(c),
                  "robust_accuracy": float(r)} for d, c, r in zip(["a", "b", "c"], clean, robust)]
    rows.append({"method": "TeCoA", "dataset": "a", "eps": 4.0, "attack": "PGD-10", "clean_accuracy": 70.0,
                 "robust_accuracy": 99.0})  # another attack: not the table's first
    text = claims.fine_tuning_change(pd.DataFrame(rows), "CLIP", "TeCoA", 4.0)
    assert "clean accuracy: -17.3 points on average over 3 sets, from -30.0 (c) to -2.0 (b)" in text
    assert "robust accuracy at 4/255: +15.7 points on average over 3 sets, from +2.0 (b) to +40.0 (a)" in text


def test_drift_ratio_says_where_the_attack_moves_the_attention_further_than_noise():
    drift = pd.DataFrame({"dataset": ["a", "b"], "random_noise": [0.1, 0.2], "adversarial": [0.25, 0.3]})
    assert claims.drift_ratio(drift) == ("The attack moves the attention further than noise on every set: "
                                         "2.5× on a, 1.5× on b.")
    drift.loc[1, "adversarial"] = 0.1
    assert "further than noise on 1 of 2 sets" in claims.drift_ratio(drift)


def test_tradeoff_extremes_name_the_right_methods():
    summary = pd.DataFrame([
        {"method": "CLIP (zero-shot)", "attack": "suite", "eps": 4.0, "clean_accuracy": 90.0, "robust_accuracy": 5.0},
        {"method": "tecoa", "attack": "suite", "eps": 4.0, "clean_accuracy": 70.0, "robust_accuracy": 40.0},
        {"method": "fare", "attack": "suite", "eps": 4.0, "clean_accuracy": 85.0, "robust_accuracy": 20.0},
        {"method": "tga_zsr", "attack": "suite", "eps": 4.0, "clean_accuracy": 75.0, "robust_accuracy": 42.0},
        {"method": "tga_zsr", "attack": "PGD-10", "eps": 4.0, "clean_accuracy": 75.0, "robust_accuracy": 60.0},
    ])
    text = claims.tradeoff_extremes(summary, 4.0)
    assert text == ("At 4/255 under suite: most robust tga_zsr (42.0 %), most clean accuracy kept fare (85.0 %). "
                    "Above and to the right of tecoa: tga_zsr.")
    with pytest.raises(ValueError, match="no fine-tuned method"):
        claims.tradeoff_extremes(summary[summary.method == "CLIP (zero-shot)"], 4.0)


def test_better_on_both_names_only_methods_that_win_in_both_coordinates():
    summary = pd.DataFrame([
        {"method": m, "attack": "suite", "eps": 4.0, "clean_accuracy": c, "robust_accuracy": r}
        for m, c, r in (("CLIP (zero-shot)", 95.0, 5.0), ("tecoa", 70.0, 40.0), ("tima", 65.0, 45.0),
                        ("tima (joint)", 75.0, 41.0))])
    assert claims.better_on_both(summary, 4.0) == (
        "At 4/255 under suite: tima (joint) (75.0 % clean, 41.0 % robust) is above and to the right of tecoa.")
    traded = summary[summary.method != "tima (joint)"]
    assert claims.better_on_both(traded, 4.0).endswith("no method is above and to the right of another; each "
                                                       "makes a different trade.")
