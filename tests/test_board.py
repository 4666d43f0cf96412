"""zsr_lab.board: numbers ranked only against numbers of the same protocol; ties share a rank; input that does not
fit is refused with the file and the reason."""

import json

import numpy as np
import pandas as pd
import pytest

import zsr_lab as zl
from zsr_lab import board
from zsr_lab.evaluate import write_results_csv
from zsr_lab.uncertainty import encode_outcomes

DATASETS = ("digits", "fashion_mnist")
N = 200
SUITE = [{"attack": "PGD-10", "eps_pixels": 4 / 255, "max_perturbation": 4 / 255, "out_of_box": 0.0}]
CW = [{"attack": "CW-10", "eps_pixels": 4 / 255, "max_perturbation": 4 / 255, "out_of_box": 0.0}]


def _rows(method, weights, kept, *, start=0, eps=4.0, members=SUITE, n=N, clean=0.8, attack="pgd-10"):
    """Result rows of one model: per dataset, ``kept`` of ``n`` images (from image ``start`` on) stay correct under
    attack."""
    rows = []
    for dataset in DATASETS:
        robust = (np.arange(n) >= start) & (np.arange(n) < start + kept)
        clean_outcomes = np.arange(n) < int(clean * n)
        rows.append(
            {
                "method": method,
                "model": "zsr-classroom-vit",
                "weights": weights,
                "dataset": dataset,
                "split": "test",
                "template": f"a photo of {dataset} {{}}",
                "seed": 0,
                "n_examples": n,
                "stopping": "any",
                "attack": attack,
                "members": members,
                "eps": eps,
                "n": n,
                "images": f"{dataset}-{n}",
                "clean_accuracy": 100 * clean_outcomes.mean(),
                "robust_accuracy": 100 * robust.mean(),
                "clean_outcomes": encode_outcomes(clean_outcomes),
                "robust_outcomes": encode_outcomes(robust),
            }
        )
    return rows


def _csv(tmp_path, name, rows):
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    return write_results_csv(pd.DataFrame(rows), folder / "results.csv")


def test_suites_are_named_by_what_they_contain():
    assert board.suite_label(["APGD-CE-100", "APGD-DLR-100"]) == "APGD-CE+DLR (100 steps)"
    assert board.suite_label([{"attack": "APGD-CE-100"}, {"attack": "APGD-T-100"}]) == "APGD-CE+T (100 steps)"
    assert board.suite_label(["APGD-CE", "APGD-T", "FAB-T", "Square"]) == "AutoAttack standard"
    assert board.suite_label(["PGD-100"]) == "PGD-100"
    assert board.suite_label(["PGD-10", "APGD-CE-10", "APGD-T-10"]) == "PGD-10+APGD-CE-10+APGD-T-10"
    per_set = {"a": ["APGD-CE-10", "APGD-T-10"], "b": ["APGD-CE-10", "APGD-T-10"], "c": ["APGD-CE-10"]}
    assert board.suite_label(per_set) == "APGD-CE+T (10 steps) (c: APGD-CE-10)"  # the sets that differ, named


def test_numbers_are_ranked_only_against_the_same_protocol(tmp_path):
    _csv(tmp_path, "a", _rows("tecoa", "aaaa", 120))
    _csv(tmp_path, "b", _rows("tga_zsr", "bbbb", 60))
    _csv(tmp_path, "c", _rows("fare", "cccc", 190, eps=1.0))  # another budget
    _csv(tmp_path, "d", _rows("pmg_aft", "dddd", 190, n=100))  # other images per set
    _csv(tmp_path, "e", _rows("tima", "eeee", 190, members=[{"attack": "APGD-CE-10"}, {"attack": "APGD-T-10"}]))
    ranked = zl.board.Board(tmp_path)
    assert len(ranked.protocols()) == 4  # never merged: ε, n and the suite each make a board
    shared = next(p for p in ranked.protocols() if p.suite == "PGD-10" and p.eps == 4.0 and p.images == (N, N))
    table = ranked.ranked(shared)
    assert list(table["model"]) == ["tecoa", "tga_zsr"] and list(table["rank"]) == [1, 2]
    assert table.loc[0, "robust (%)"].startswith("60.0 [") and table.loc[0, "weights"] == "aaaa"
    assert table.loc[0, "checks"] == "passed (2 checks)" and table.loc[0, "source"].endswith("results.csv")
    assert "APGD-CE+T (10 steps)" in {p.suite for p in ranked.protocols()}
    whole = ranked.table()
    assert len(whole) == 5 and whole["protocol"].nunique() == 4


def test_entries_the_paired_test_cannot_separate_share_a_rank(tmp_path):
    _csv(tmp_path, "a", _rows("tecoa", "aaaa", 100))
    _csv(tmp_path, "b", _rows("close", "bbbb", 103, start=5))  # kept 103, 5 lost and 8 won per set: a tie
    _csv(tmp_path, "c", _rows("far", "cccc", 40))
    # 10 more images per set, lost by no image of tecoa's: separated on the same images, where the numbers of
    # images alone could not tell 55 % from 50 % (the next test)
    _csv(tmp_path, "d", _rows("better", "dddd", 110))
    table = zl.board.Board(tmp_path).table()
    assert dict(zip(table["model"], table["rank"])) == {"better": 1, "close": 2, "tecoa": 2, "far": 4}


def test_without_per_image_outcomes_ties_come_from_the_numbers_of_images(tmp_path):
    def unpaired(method, weights, kept):
        return [{k: v for k, v in row.items() if k != "robust_outcomes"} for row in _rows(method, weights, kept)]

    _csv(tmp_path, "a", unpaired("tecoa", "aaaa", 100))
    _csv(tmp_path, "b", unpaired("close", "bbbb", 110))  # 2.5 points on 400 images: inside the noise
    _csv(tmp_path, "c", unpaired("far", "cccc", 40))
    table = zl.board.Board(tmp_path).table()
    assert dict(zip(table["model"], table["rank"])) == {"close": 1, "tecoa": 1, "far": 3}


def test_bad_input_is_refused_with_the_file_and_the_reason(tmp_path):
    other = tmp_path / "scores.json"
    other.write_text("{}")
    with pytest.raises(board.BoardError, match=r"scores\.json: a board reads results\.jsonl .* not a \.json file"):
        board.read_entries(other)
    rows = pd.DataFrame(_rows("tecoa", "aaaa", 100)).drop(columns="eps")
    path = _csv(tmp_path, "no_eps", rows.to_dict("records"))
    with pytest.raises(board.BoardError, match=r"no_eps/results\.csv: rows without eps \(the budget\)"):
        board.read_entries(path)
    rows = _rows("tecoa", "aaaa", 100)
    rows[1]["template"] = None
    with pytest.raises(board.BoardError, match="rows with an empty template"):
        board.read_entries(_csv(tmp_path, "empty", rows))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.jsonl").write_text(json.dumps({"format": 2, "dataset": "digits"}) + "\n")
    with pytest.raises(board.BoardError, match="no rows of the current results format"):
        board.read_entries(tmp_path / "old" / "results.jsonl")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(board.BoardError, match="no results.csv or results.jsonl under this folder"):
        board.read_entries(tmp_path / "nothing")
    with pytest.raises(board.BoardError, match="no such file or folder"):
        board.read_entries(tmp_path / "missing.csv")


def test_the_same_weights_with_other_numbers_are_refused_and_the_same_numbers_kept_once(tmp_path):
    first = _csv(tmp_path, "run", _rows("tecoa", "aaaa", 100))
    again = _csv(tmp_path, "copy", _rows("tecoa", "aaaa", 100))
    assert len(zl.board.Board(first, again).entries) == 1  # the same result found twice
    stale = _csv(tmp_path, "stale", _rows("tecoa", "aaaa", 120))
    with pytest.raises(board.BoardError, match=r"stale/results\.csv: weights aaaa .* but .*run/results\.csv gives"):
        zl.board.Board(first, stale)


def test_an_entry_whose_rows_show_a_broken_attack_says_so(tmp_path):
    outside = [{"attack": "PGD-10", "eps_pixels": 4 / 255, "max_perturbation": 8 / 255, "out_of_box": 0.0}]
    _csv(tmp_path, "ball", _rows("leaky", "aaaa", 100, members=outside))
    rising = _rows("rising", "bbbb", 100, eps=1.0) + _rows("rising", "bbbb", 150, eps=4.0)
    _csv(tmp_path, "rising", rising)
    checks = {f"{e.name}{e.protocol.eps:g}": e.checks for e in zl.board.Board(tmp_path).entries}
    assert checks["leaky4"] == "failed: a perturbation left the ε-ball or the [0,1] box"
    assert checks["rising4"] == "failed: robust accuracy rises with ε"


def test_published_numbers_sit_on_boards_of_their_own_protocols():
    published = zl.board.Board(reported=True)
    suites = {(p.suite, p.eps, len(p.datasets)) for p in published.protocols()}
    assert {("PGD-100", 1.0, 16), ("APGD-CE+DLR (100 steps)", 1.0, 16), ("APGD-CE+T (100 steps)", 4.0, 13)} <= suites
    papers_aa = [p for p in published.protocols() if p.suite.startswith("APGD-CE+DLR")]
    assert len(papers_aa) == 2  # the TGA-ZSR paper's whole splits and UCAT's 1,000 images per set: never merged
    ucat = published.ranked(next(p for p in papers_aa if set(p.images) == {1000}))
    assert list(ucat["rank"]) == [1, 1]  # 30.58 vs 30.52 on 16,000 images: a tie
    assert set(ucat["clean (%)"]) == {"not reported"} and set(ucat["checks"]) == {"none published"}
    pgd = published.ranked(next(p for p in published.protocols() if p.suite == "PGD-100"))
    assert pgd.loc[0, "model"] == "comp_tga" and pgd.loc[0, "source"] == "Yu et al. 2026 (Comp-TGA)"


def test_an_evaluation_table_joins_and_a_page_shows_each_protocol_above_a_sortable_table(tmp_path):
    _csv(tmp_path, "a", _rows("tecoa", "aaaa", 100))
    table = pd.DataFrame(
        _rows("CLIP (zero-shot)", "zzzz", 20) + _rows("CLIP (zero-shot)", "zzzz", 60, attack="cw-10", members=CW)
    )
    shown = zl.board.Board(zl.board.table_entries(table, "evaluated here"), tmp_path)
    assert len(shown.protocols()) == 2 and len(shown.protocols(attack="pgd-10")) == 1
    html = shown.html(shown.protocols(attack="pgd-10"))
    assert html.count('class="zsr-board-protocol"') == 1 and html.count('<table class="dataframe zsr-board"') == 1
    assert "evaluated here" in html and "CLIP (zero-shot)" in html and "tecoa" in html
    script = html[html.index("<script>") :]
    assert "const " not in script and "let " not in script  # a page may hold it twice (the browser check)
    with pytest.raises(board.BoardError, match="my table: rows without eps"):
        zl.board.table_entries(table.drop(columns="eps"), "my table")
    assert "a/results.csv" in html and str(tmp_path) not in html  # a file by its folder: the page names no machine


def test_a_board_groups_a_model_family_not_its_tag():
    assert (
        board.model_family("ViT-B-32-quickgelu")
        == board.model_family("hf-hub:chs20/FARE4-ViT-B-32-laion2B")
        == "ViT-B/32"
    )
    assert board.model_family("zsr-classroom-vit") == "classroom ViT (zsr_lab)"
    assert board.model_family("ViT-L-14") == "ViT-L-14"  # an unknown family is its own
