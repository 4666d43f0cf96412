"""The sentences the chapters print about their numbers say what the tables say."""

import numpy as np
import pandas as pd
import pytest

from zsr_lab import claims, uncertainty


def _sweep():
    rows = []
    for dataset, accuracies in {"digits": [90, 60, 40, 10, 0], "faces": [80, 75, 70, 50, 30]}.items():
        rows += [
            {"dataset": dataset, "eps": eps, "attack": "PGD-10", "robust_accuracy": float(a)}
            for eps, a in zip([0, 1, 2, 4, 8], accuracies)
        ]
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
        rows += [
            {
                "method": method,
                "dataset": d,
                "eps": 4.0,
                "attack": "suite",
                "clean_accuracy": float(c),
                "robust_accuracy": float(r),
            }
            for d, c, r in zip(["a", "b", "c"], clean, robust)
        ]
    rows.append(
        {
            "method": "TeCoA",
            "dataset": "a",
            "eps": 4.0,
            "attack": "PGD-10",
            "clean_accuracy": 70.0,
            "robust_accuracy": 99.0,
        }
    )  # another attack: not the table's first
    text = claims.fine_tuning_change(pd.DataFrame(rows), "CLIP", "TeCoA", 4.0)
    assert "clean accuracy: -17.3 points on average over 3 sets, from -30.0 (c) to -2.0 (b)" in text
    assert "robust accuracy at 4/255: +15.7 points on average over 3 sets, from +2.0 (b) to +40.0 (a)" in text


def test_drift_ratio_says_where_the_attack_moves_the_attention_further_than_noise():
    drift = pd.DataFrame({"dataset": ["a", "b"], "random_noise": [0.1, 0.2], "adversarial": [0.25, 0.3]})
    assert claims.drift_ratio(drift) == (
        "The attack moves the attention further than noise on every set: 2.5× on a, 1.5× on b."
    )
    drift.loc[1, "adversarial"] = 0.1
    assert "further than noise on 1 of 2 sets" in claims.drift_ratio(drift)


def test_tradeoff_extremes_name_the_right_methods():
    summary = pd.DataFrame(
        [
            {
                "method": "CLIP (zero-shot)",
                "attack": "suite",
                "eps": 4.0,
                "clean_accuracy": 90.0,
                "robust_accuracy": 5.0,
            },
            {"method": "tecoa", "attack": "suite", "eps": 4.0, "clean_accuracy": 70.0, "robust_accuracy": 40.0},
            {"method": "fare", "attack": "suite", "eps": 4.0, "clean_accuracy": 85.0, "robust_accuracy": 20.0},
            {"method": "tga_zsr", "attack": "suite", "eps": 4.0, "clean_accuracy": 75.0, "robust_accuracy": 42.0},
            {"method": "tga_zsr", "attack": "PGD-10", "eps": 4.0, "clean_accuracy": 75.0, "robust_accuracy": 60.0},
        ]
    )
    text = claims.tradeoff_extremes(summary, 4.0)
    assert text == (
        "At 4/255 under suite: most robust tga_zsr (42.0 %), most clean accuracy kept fare (85.0 %). "
        "Above and to the right of tecoa: tga_zsr."
    )
    with pytest.raises(ValueError, match="no fine-tuned method"):
        claims.tradeoff_extremes(summary[summary.method == "CLIP (zero-shot)"], 4.0)


def test_better_on_both_names_only_methods_that_win_in_both_coordinates():
    summary = pd.DataFrame(
        [
            {"method": m, "attack": "suite", "eps": 4.0, "clean_accuracy": c, "robust_accuracy": r}
            for m, c, r in (
                ("CLIP (zero-shot)", 95.0, 5.0),
                ("tecoa", 70.0, 40.0),
                ("tima", 65.0, 45.0),
                ("tima (joint)", 75.0, 41.0),
            )
        ]
    )
    assert claims.better_on_both(summary, 4.0) == (
        "At 4/255 under suite: tima (joint) (75.0 % clean, 41.0 % robust) is above and to the right of tecoa."
    )
    traded = summary[summary.method != "tima (joint)"]
    assert claims.better_on_both(traded, 4.0).endswith(
        "no method is above and to the right of another; each makes a different trade, or the evidence cannot "
        "tell them apart."
    )


def _plane():
    """Two attacks at two budgets; at 4/255 under the suite: CLIP (80, 0), tecoa (60, 30), fare (75, 20),
    tima (55, 35)."""
    values = {
        ("suite", 4.0): {"CLIP (zero-shot)": (80, 0), "tecoa": (60, 30), "fare": (75, 20), "tima": (55, 35)},
        ("PGD-10", 4.0): {"CLIP (zero-shot)": (80, 1), "tecoa": (60, 31), "fare": (75, 26), "tima": (55, 35)},
        ("suite", 1.0): {"CLIP (zero-shot)": (80, 10), "tecoa": (60, 50), "fare": (75, 60), "tima": (55, 40)},
        ("PGD-10", 1.0): {"CLIP (zero-shot)": (80, 10), "tecoa": (60, 50), "fare": (75, 60), "tima": (55, 40)},
    }
    return pd.DataFrame(
        [
            {"method": m, "attack": a, "eps": e, "clean_accuracy": float(c), "robust_accuracy": float(r)}
            for (a, e), methods in values.items()
            for m, (c, r) in methods.items()
        ]
    )


def test_percent_rounds_as_the_tables_round():
    value = 17.85  # stored as 17.85000000000000142: a format string gives 17.9, the tables' round(1) 17.8
    assert claims.percent(value) == f"{pd.Series([value]).round(1).iloc[0]:.1f}" == "17.8"
    assert claims.points(-0.04) == "0.0" and claims.points(2.25) == "+2.2"


def test_plane_placement_gives_each_quadrant_and_the_extremes():
    text = claims.plane_placement(_plane(), 4.0)
    assert "At 4/255 under suite" in text and "from the pre-trained model's 80.0 % clean and 0.0 % robust" in text
    assert "tecoa -20.0 clean / +30.0 robust, fare -5.0 clean / +20.0 robust" in text
    assert "fare below and to the right of tecoa; tima above and to the left of tecoa" in text
    assert "Most robust: tima (35.0 %); most clean accuracy kept: fare (75.0 %)." in text


def test_attack_gap_and_gap_by_budget_count_the_reversed_pairs():
    text = claims.attack_gap(_plane(), 4.0, worst="suite", single="PGD-10")
    assert "by 0.0 to 6.0 points over the 3 fine-tuned models (most for fare)" in text
    assert "reverses the order of 0 pairs." in text  # fare stays below tecoa: 26 < 31 and 20 < 30
    flipped = _plane()
    flipped.loc[(flipped.attack == "PGD-10") & (flipped.eps == 4.0) & (flipped.method == "fare"), "robust_accuracy"] = (
        32.0
    )
    assert "reverses the order of 1 pair (tecoa / fare)." in claims.attack_gap(
        flipped, 4.0, worst="suite", single="PGD-10"
    )
    by_budget = claims.gap_by_budget(_plane(), worst="suite", single="PGD-10")
    assert "1/255: 0.0 to 0.0; 4/255: 0.0 to 6.0" in by_budget
    # worst case at 1 → 4: tecoa 50 → 30, fare 60 → 20, tima 40 → 35: tecoa/fare and fare/tima swap, tecoa/tima do
    # not (tima below at 1, above at 4: also a swap) → 3 of 3
    assert "3 of 3 pairs of fine-tuned models are separated in opposite orders at 1/255 and 4/255" in by_budget
    assert by_budget.endswith("(tecoa / fare, tecoa / tima, fare / tima); 0 more swap within the noise.")


def test_dataset_changes_average_the_fine_tuned_models_per_set():
    rows = [
        {
            "method": m,
            "dataset": d,
            "eps": 4.0,
            "attack": "suite",
            "clean_accuracy": float(c),
            "robust_accuracy": float(r),
        }
        for m, per_set in (
            ("CLIP (zero-shot)", {"a": (90, 0), "b": (70, 10)}),
            ("x", {"a": (60, 30), "b": (68, 20)}),
            ("y", {"a": (80, 10), "b": (66, 30)}),
        )
        for d, (c, r) in per_set.items()
    ]
    text = claims.dataset_changes(pd.DataFrame(rows), 4.0)
    assert "a -20.0 clean, +20.0 robust; b -3.0 clean, +15.0 robust" in text
    assert "Most clean accuracy lost on a; least on b." in text


def test_relative_cost_and_attack_agreement_and_curve_against():
    cost = pd.DataFrame({"images/s": {"tecoa": 100.0, "fare": 40.0, "pmg_aft": 120.0}})
    assert claims.relative_cost(cost) == (
        "Training throughput relative to tecoa, fastest first: pmg_aft 1.20×, tecoa 1.00×, fare 0.40×."
    )
    text = claims.attack_agreement(_plane(), 4.0, "PGD-10", "suite")
    assert (
        "differ by at most 6.0 points (fare); suite finds lower robust accuracy for 3 of 4 models, PGD-10 for 0" in text
    )
    text = claims.curve_against(_plane(), "tima", "tecoa")
    assert text == (
        "tima minus tecoa under suite, robust accuracy in points: 1/255 -10.0, 4/255 +5.0; clean accuracy -5.0 points."
    )


def test_lead_under_the_suite_says_how_much_the_worst_case_takes_back():
    text = claims.lead_under_the_suite(_plane(), "tima", "tecoa", suite="suite", single="PGD-10")
    assert text == (
        "tima's robust lead over tecoa in points, PGD-10 → suite: 1/255 -10.0 → -10.0, 4/255 +4.0 → +5.0; "
        "at 4/255 the suite takes none of the lead back."
    )
    text = claims.lead_under_the_suite(_plane(), "fare", "CLIP (zero-shot)", suite="suite", single="PGD-10")
    assert text.endswith("at 4/255 the suite takes back 5.0 of its 25.0 points.")
    text = claims.lead_under_the_suite(_plane(), "CLIP (zero-shot)", "tecoa", suite="suite", single="PGD-10")
    assert text.endswith("at 4/255 CLIP (zero-shot) has no lead under PGD-10 to take back.")


def test_drift_and_localisation_summaries_name_the_extremes():
    drift = pd.DataFrame(
        [
            {"model": m, "dataset": d, "clean": c, "random_noise": c + 0.01, "adversarial": a}
            for m, c, a in (("CLIP", 0.0, 0.30), ("TeCoA", 0.20, 0.28), ("TGA-ZSR", 0.05, 0.15))
            for d in ("p", "q")
        ]
    )
    text = claims.drift_summary(drift)
    assert "TeCoA: 0.200 clean, 0.210 noise, 0.280 attacked (+0.080 from the attack)" in text
    assert "Furthest on clean images: TeCoA; closest under attack: TGA-ZSR; least added by the attack: TeCoA." in text
    localisation = pd.DataFrame(
        [
            {"model": m, "dataset": "scenes", "condition": c, "lift": lift, "accuracy": acc}
            for m, lifts in (("CLIP", (1.4, 1.4, 1.3)), ("TGA-ZSR", (1.2, 1.2, 1.35)))
            for c, lift, acc in zip(("clean", "random_noise", "adversarial"), lifts, (90, 88, 2))
        ]
    )
    text = claims.localisation_summary(localisation)
    assert text == (
        "scenes, lift clean / noise / attacked: CLIP 1.40 / 1.40 / 1.30 (2.0 % right under attack); "
        "TGA-ZSR 1.20 / 1.20 / 1.35 (2.0 % right under attack); highest clean lift CLIP, highest "
        "attacked lift TGA-ZSR."
    )


def test_sensitivity_slopes_go_from_the_smallest_to_the_largest_value():
    sweep = pd.DataFrame(
        [
            {
                "option": o,
                "value": v,
                "eps": 4.0,
                "attack": "suite",
                "clean_accuracy": 70 + 10 * v,
                "robust_accuracy": 30 - v,
            }
            for o in ("alpha", "beta")
            for v in (0.8, 0.0, 0.1)
        ]
    )
    assert claims.sensitivity_slopes(sweep, 4.0) == (
        "At 4/255, in points: alpha from 0 to 0.8: +8.0 clean, -0.8 "
        "robust; beta from 0 to 0.8: +8.0 clean, -0.8 robust."
    )
    # the table shows 77.0 and 81.8: the sentence says +4.8, not the +4.9 of the unrounded means
    two_points = pd.DataFrame(
        [
            {"option": "alpha", "value": v, "eps": 4.0, "attack": "suite", "clean_accuracy": c, "robust_accuracy": 30}
            for v, c in ((0.0, 76.96), (0.64, 81.84))
        ]
    )
    assert "alpha from 0 to 0.64: +4.8 clean, 0.0 robust" in claims.sensitivity_slopes(two_points, 4.0)


def _evaluated(means: dict, n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Per-dataset rows with per-image outcomes on shared images: ``means`` maps (method, attack, eps) to (clean,
    robust) in %; every model keeps nested sets of images, so differences are as paired as real evaluations'."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    rows = []
    for (method, attack, eps), (clean, robust) in means.items():
        for dataset in ("a", "b"):
            kept_clean = np.zeros(n, dtype=bool)
            kept_clean[order[: round(clean * n / 100)]] = True
            kept_robust = np.zeros(n, dtype=bool)
            kept_robust[order[: round(robust * n / 100)]] = True
            rows.append(
                {
                    "method": method,
                    "dataset": dataset,
                    "attack": attack,
                    "eps": eps,
                    "n": n,
                    "images": f"images-{dataset}",
                    "clean_accuracy": 100 * kept_clean.mean(),
                    "robust_accuracy": 100 * kept_robust.mean(),
                    "clean_outcomes": uncertainty.encode_outcomes(kept_clean),
                    "robust_outcomes": uncertainty.encode_outcomes(kept_robust),
                }
            )
    return pd.DataFrame(rows)


def test_claims_call_a_difference_the_evidence_cannot_separate_a_tie():
    table = _evaluated(
        {
            ("CLIP (zero-shot)", "suite", 4.0): (80, 5),
            ("tecoa", "suite", 4.0): (60, 30),
            ("pmg_aft", "suite", 4.0): (60.5, 30.5),  # 2 images per set apart: a tie on both axes
            ("tima", "suite", 4.0): (70, 40),  # 40 images per set apart: separated on both
        }
    )
    placed = claims.plane_placement(table, 4.0)
    assert f"pmg_aft level with tecoa on both axes ({uncertainty.TIE})" in placed
    assert "tima above and to the right of tecoa" in placed
    assert "Most robust: tima (40.0 %); most clean accuracy kept: tima (70.0 %)." in placed
    assert claims.better_on_both(table, 4.0).endswith(
        "tima (70.0 % clean, 40.0 % robust) is above and to the right of tecoa, pmg_aft."
    )
    # the means alone would put pmg_aft above and to the right of tecoa
    assert "pmg_aft above and to the right of tecoa" in claims.plane_placement(claims.summarize(table), 4.0)
    close = table[table.method != "tima"]
    assert "most robust pmg_aft (30.5 %), not told apart from tecoa" in claims.tradeoff_extremes(close, 4.0)
    assert "Above and to the right of tecoa: none." in claims.tradeoff_extremes(close, 4.0)


def test_pairs_that_swap_within_the_noise_are_not_counted_as_reversed():
    table = _evaluated(
        {
            ("tecoa", "suite", 1.0): (60, 50),
            ("fare", "suite", 1.0): (60, 50.5),  # a tie at 1/255
            ("tecoa", "suite", 4.0): (60, 30),
            ("fare", "suite", 4.0): (60, 20),  # separated at 4/255
            ("tecoa", "PGD-10", 1.0): (60, 50),
            ("fare", "PGD-10", 1.0): (60, 50.5),
            ("tecoa", "PGD-10", 4.0): (60, 31),
            ("fare", "PGD-10", 4.0): (60, 26),
        }
    )
    text = claims.gap_by_budget(table, worst="suite", single="PGD-10")
    assert "0 of 1 pairs of fine-tuned models are separated in opposite orders" in text
    assert text.endswith("; 1 more swap within the noise.")
    curve = claims.curve_against(table, "fare", "tecoa")
    assert "1/255 +0.5 (tie), 4/255 -10.0;" in curve and curve.endswith(f"A tie: {uncertainty.TIE}.")
    agreement = claims.attack_agreement(table, 1.0, "PGD-10", "suite")
    assert "suite finds lower robust accuracy for 0 of 2 models, PGD-10 for 0; 2 are ties" in agreement


def test_fine_tuning_change_says_whether_the_change_is_separated():
    table = _evaluated({("CLIP", "suite", 4.0): (80, 5), ("tecoa", "suite", 4.0): (79.5, 30)})
    text = claims.fine_tuning_change(table, "CLIP", "tecoa", 4.0)
    assert "clean accuracy: -0.5 points on average over 2 sets (a tie)" in text
    assert "robust accuracy at 4/255: +25.0 points on average over 2 sets (separated)" in text
    assert text.endswith(f"A tie: {uncertainty.TIE} (paired exact test on the same images).")
