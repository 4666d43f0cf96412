"""The comparison chapter's tools: the one-row-per-method table, the per-dataset heatmap, the papers' reported
numbers and loading the results of full-scale runs."""

import re
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

import zsr_lab as zl

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]


def _evaluation(method, clean, robust):
    """Rows as the evaluation engine writes them: ``clean``/``robust`` map dataset → value (robust: per ε)."""
    return pd.DataFrame(
        [
            {
                "method": method,
                "model": "m",
                "pretrained": "p",
                "dataset": name,
                "attack": "PGD-10",
                "eps": eps,
                "n": 100,
                "clean_accuracy": clean[name],
                "robust_accuracy": value,
            }
            for name in clean
            for eps, value in robust[name].items()
        ]
    )


@pytest.fixture()
def two_methods():
    a = _evaluation("a", {"x": 80.0, "y": 60.0}, {"x": {1.0: 40.0, 4.0: 10.0}, "y": {1.0: 30.0, 4.0: 0.0}})
    b = _evaluation("b", {"x": 70.0, "y": 50.0}, {"x": {1.0: 50.0, 4.0: 30.0}, "y": {1.0: 40.0, 4.0: 20.0}})
    return pd.concat([a, b], ignore_index=True)


def test_comparison_table_is_the_mean_over_datasets_per_method_and_eps(two_methods):
    table = zl.evaluate.comparison_table(zl.with_mean(two_methods))  # mean rows are not counted twice
    assert list(table["method"]) == ["a", "b"]
    assert list(table.columns) == ["method", "datasets", "n", "clean", "PGD-10 @ 1/255", "PGD-10 @ 4/255"]
    row = table.set_index("method")
    assert row.loc["a", "clean"] == 70.0 and row.loc["a", "PGD-10 @ 1/255"] == 35.0
    assert row.loc["a", "PGD-10 @ 4/255"] == 5.0 and row.loc["b", "PGD-10 @ 4/255"] == 25.0
    assert (table["datasets"] == 2).all() and (table["n"] == 200).all()  # the images behind each mean


def test_worst_case_and_pgd_stand_side_by_side_and_the_gap_is_their_difference(two_methods):
    worst = two_methods.assign(attack="pgd-10+aa-10", robust_accuracy=two_methods.robust_accuracy - 4)
    table = pd.concat([worst, two_methods], ignore_index=True)
    compared = zl.evaluate.comparison_table(table)
    assert list(compared.columns)[4:] == [
        "pgd-10+aa-10 @ 1/255",
        "pgd-10+aa-10 @ 4/255",
        "PGD-10 @ 1/255",
        "PGD-10 @ 4/255",
    ]
    assert compared.set_index("method").loc["b", "pgd-10+aa-10 @ 4/255"] == 21.0
    summary = zl.summarize(table)
    ax = zl.plots.plot_tradeoff(summary, scale="classroom", eps=4.0)  # the first attack: the worst case
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b"] and "pgd-10+aa-10" in ax.get_ylabel()
    ax = zl.plots.plot_attack_gap(summary, scale="classroom", eps=4.0, worst="pgd-10+aa-10", single="PGD-10")
    assert [p.get_height() for p in ax.patches] == [4.0, 4.0]
    with pytest.raises(ValueError, match="no rows under 'aa'"):
        zl.evaluate.select_attack(table, "aa")


def test_heatmap_shows_each_method_and_dataset_and_their_mean(two_methods):
    ax = zl.plots.plot_heatmap(two_methods, scale="classroom", value="robust_accuracy", eps=4.0)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "mean"]
    assert [t.get_text() for t in ax.texts] == ["10.0", "0.0", "5.0", "30.0", "20.0", "25.0"]
    half = two_methods.assign(robust_accuracy=two_methods["robust_accuracy"] + 6.5)  # 16.5: a tie to round
    texts = [t.get_text() for t in zl.plots.plot_heatmap(half, scale="classroom", eps=4.0).texts]
    assert "16.5" in texts and "16" not in texts  # as the tables show it, not rounded half to even
    assert "classroom scale" in ax.get_title() and "4/255" in ax.get_title()


def test_reported_numbers_are_the_papers_headline_table_with_their_sources():
    reported = zl.reported.reported_results().set_index("method")
    headline = reported[reported["attack"] == "PGD-100"]
    assert headline.loc["tga_zsr", "robust_accuracy"] == 42.09
    assert reported.loc["CLIP (zero-shot)", "clean_accuracy"] == 64.42
    assert reported.loc["CLIP (zero-shot)", "robust_accuracy"] == 4.90
    assert reported.loc["comp_tga", "robust_accuracy"] == 44.46
    assert (reported["eps"] == 1.0).all() and reported["attack"].iloc[0] == "PGD-100"
    tga = reported.loc["tga_zsr"].set_index("attack")["robust_accuracy"]
    assert tga.to_dict() == {"PGD-100": 42.09, "papers-aa": 30.86, "CW-100": 40.50}
    assert all("ε ∈ {1}/255" in p and "last-iterate" in p for p in reported["protocol"])
    assert set(reported.index) - {"CLIP (zero-shot)"} <= set(zl.methods.METHODS)
    keys = set(re.findall(r"@\w+\{(\w+),", (ROOT / "book" / "references.bib").read_text()))
    assert set(reported["source"]) <= keys  # every number cites a paper the book lists
    sources = {
        key.strip()
        for table in (reported, zl.reported.published_differences(), zl.reported.robustvlm_results())
        for keys in table["source"]
        for key in keys.split(",")
    }
    assert sources <= set(zl.reported.CITATIONS) and set(zl.reported.CITATIONS) <= keys
    shown = zl.reported.cited(zl.reported.published_differences())
    assert not any(key in text for text in shown["source"] for key in keys)  # no raw key reaches a page
    assert "Lu et al. 2026 (UCAT)" in set(shown["source"])


def test_run_results_are_loaded_from_every_run_folder_and_repeated_methods_are_told_apart(tmp_path, two_methods):
    for folder, method in [("tecoa", "a"), ("pmg_paper", "b"), ("pmg_repository", "b")]:
        (tmp_path / "runs" / folder).mkdir(parents=True)
        rows = two_methods[two_methods["method"] == method].assign(method=method)
        zl.with_mean(rows).to_csv(tmp_path / "runs" / folder / "results.csv", index=False)  # as train_full does
    table = zl.reported.load_run_results(tmp_path / "runs")
    assert "mean" not in set(table["dataset"])
    assert set(table["method"]) == {"a", "b (pmg_paper)", "b (pmg_repository)"}
    assert zl.evaluate.comparison_table(table).set_index("method").loc["a", "PGD-10 @ 4/255"] == 5.0


def test_missing_or_empty_results_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: pass the folder"):
        zl.reported.load_run_results(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="run book/train_full.ipynb with run_dir inside"):
        zl.reported.load_run_results(tmp_path)


def test_robustvlm_numbers_and_the_side_by_side_check():
    reported = zl.reported.robustvlm_results()
    fare1 = reported[reported["pretrained"] == "robustvlm-fare-eps1"].set_index("eps")
    assert fare1.loc[1.0, "clean_accuracy"] == 60.5 and list(fare1["robust_accuracy"]) == [38.0, 20.1, 2.9]
    assert all(zl.get_spec(name) for name in zl.reported.ROBUSTVLM_DATASETS)
    assert len(zl.reported.ROBUSTVLM_DATASETS) == 13 and zl.reported.robustvlm_protocol().attacks == ("aa",)
    measured = pd.DataFrame(
        [
            {
                "pretrained": "robustvlm-tecoa-eps1",
                "dataset": name,
                "attack": "aa",
                "eps": 1.0,
                "clean_accuracy": 50.0 + k % 2,
                "robust_accuracy": 40.0,
            }
            for k, name in enumerate(zl.reported.ROBUSTVLM_DATASETS)
        ]
    )
    check = zl.reported.against_robustvlm(measured)
    assert len(check) == 1 and check.loc[0, "checkpoint"] == "TeCoA¹ (RobustVLM)" and check.loc[0, "datasets"] == 13
    assert check.loc[0, "clean (measured)"] == pytest.approx(50 + 6 / 13)
    assert check.loc[0, "robust difference"] == pytest.approx(40.0 - 38.8)
