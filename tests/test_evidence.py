"""Per-image evidence: verdicts that do not depend on the batch, the ledger that accumulates them, intervals and
paired comparisons."""

import gzip
import os

import numpy as np
import pandas as pd
import pytest
import torch

import zsr_lab as zl
from zsr_lab import evaluate, uncertainty
from zsr_lab.ledger import COLUMNS, Ledger, LedgerError

MEMBERS = "pgd-5+apgd_ce-5+apgd_t-5:targets=3"


def _verdicts(folder):
    table = zl.read_ledger(folder / zl.ledger.LEDGER_FILE)
    return table.set_index(["dataset", "index", "eps", "member"])[["outcome", "passes"]].sort_index()


def test_verdicts_do_not_depend_on_the_batch_size_or_the_cascade(classroom_clip, tmp_path):
    """Each image's random start comes from its identity: PGD, APGD-CE and APGD-T give every image the same
    verdict (and cost) at batch sizes 8 and 256, and with or without the cascade."""
    protocol = zl.Protocol(("digits",), (MEMBERS,), (4.0,), n_examples=120, cascade=False)
    small = evaluate.evaluate_robustness(classroom_clip, protocol, batch_size=8, out_dir=tmp_path / "8", progress=False)
    large = evaluate.evaluate_robustness(
        classroom_clip, protocol, batch_size=256, out_dir=tmp_path / "256", progress=False
    )
    by_8, by_256 = _verdicts(tmp_path / "8"), _verdicts(tmp_path / "256")
    assert set(by_8.index.get_level_values("member")) == {"clean", "pgd-5", "apgd_ce-5", "apgd_t-5:targets=3"}
    pd.testing.assert_frame_equal(by_8, by_256)
    assert 0 < (by_8.outcome == 1).mean() < 1  # some images survive, some do not: the comparison means something
    assert list(small.robust_outcomes) == list(large.robust_outcomes)

    cascade = evaluate.evaluate_robustness(
        classroom_clip, protocol.replace(cascade=True), batch_size=32, out_dir=tmp_path / "cascade", progress=False
    )
    in_cascade = _verdicts(tmp_path / "cascade")
    shared = in_cascade.join(by_8, rsuffix="_alone", how="inner")
    assert len(shared) == len(in_cascade)  # the cascade attacked a subset of the images every member attacked
    assert (shared.outcome == shared.outcome_alone).all() and (shared.passes == shared.passes_alone).all()
    assert cascade.robust_accuracy.iloc[0] == small.robust_accuracy.iloc[0]


def test_a_batch_gives_the_logits_of_its_images_one_by_one(classroom_clip):
    """The known bug of PMG-AFT's repository (robust accuracy changed with the test batch size) cannot happen here:
    the model classifies an image the same whatever shares its batch."""
    data = zl.evaluate.subset(zl.load_dataset("digits", image_size=28, verbose=False), 64, seed=1)
    images = torch.stack([data[i][0] for i in range(len(data))])
    classroom_clip.set_classifier(zl.dataset_classifier(classroom_clip, "digits"))
    with torch.no_grad():
        together = classroom_clip(images)
        alone = torch.cat([classroom_clip(image[None]) for image in images])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    assert torch.equal(together.argmax(1), alone.argmax(1))


def test_seeded_noise_is_per_image():
    seeds = torch.tensor([5, 9, 5])
    noise = zl.attack_base.image_noise(seeds, (3, 2, 4), like=torch.zeros(1))
    assert torch.equal(noise[0], noise[2]) and not torch.equal(noise[0], noise[1])
    assert torch.equal(zl.attack_base.image_noise(seeds[1:2], (1, 2, 4), like=torch.zeros(1))[0], noise[1])
    assert ((noise >= 0) & (noise < 1)).all()


def test_the_ledger_reuses_members_and_the_worst_case_accumulates(classroom_clip, tmp_path, monkeypatch):
    kwargs = dict(n_examples={"digits": 150}, out_dir=tmp_path, progress=False)
    suite = evaluate.evaluate_robustness(classroom_clip, ["digits"], ["pgd-5+apgd_ce-5"], [4], **kwargs)

    # PGD alone is the suite's first member on the same images: read from the ledger, nothing is attacked
    monkeypatch.setattr(evaluate, "_attack_dataset", lambda *a, **k: pytest.fail("attacked a recorded member"))
    alone = evaluate.evaluate_robustness(classroom_clip, ["digits"], ["pgd-5"], [4], **kwargs)
    assert alone.robust_accuracy.iloc[0] == suite.members.iloc[0][0]["robust_after"]
    assert alone.robust_accuracy.iloc[0] >= suite.robust_accuracy.iloc[0]
    # ... and its worst case is the one over everything recorded for the images: the suite's
    assert alone.worst_case_accuracy.iloc[0] == suite.robust_accuracy.iloc[0]
    assert alone.worst_case_members.iloc[0] == ["pgd-5", "apgd_ce-5"]
    monkeypatch.undo()

    # a new attack on the same images adds its breaks; the worst case can only go down
    cw = evaluate.evaluate_robustness(classroom_clip, ["digits"], ["cw-5"], [4], **kwargs)
    assert cw.worst_case_accuracy.iloc[0] <= suite.worst_case_accuracy.iloc[0]
    assert set(cw.worst_case_members.iloc[0]) | set(cw.worst_case_partial.iloc[0]) == {"pgd-5", "apgd_ce-5", "cw-5"}
    stored = evaluate.stored_results(tmp_path)
    assert list(stored.attack) == ["pgd-5+apgd_ce-5", "PGD-5", "CW-5"]
    assert (stored.worst_case_accuracy == cw.worst_case_accuracy.iloc[0]).all()  # older rows see the new attack


def test_the_ledger_is_compact_and_readable_with_pandas(tmp_path):
    """16 sets × 1,000 images × 3 budgets, clean plus two members on the images they attack, stays well under a
    megabyte."""
    rng = np.random.default_rng(0)
    ledger = Ledger(tmp_path / "ledger.csv.gz")
    for d in range(16):
        indices = np.sort(rng.choice(50_000, 1000, replace=False))
        clean = rng.random(1000) < 0.6
        ledger.add(
            ("f" * 16, "c" * 12, f"set{d}", int(i), 0.0, "clean", int(c), 0, 0.0, 0.0, "", 0)
            for i, c in zip(indices, clean)
        )
        for eps in (1.0, 2.0, 4.0):
            survived = clean & (rng.random(1000) < 0.5)
            for position, member in enumerate(("apgd_ce-100", "apgd_t-100"), 1):
                attacked = indices[clean] if position == 1 else indices[survived]
                ledger.add(
                    (
                        "f" * 16,
                        "c" * 12,
                        f"set{d}",
                        int(i),
                        eps,
                        member,
                        int(rng.random() < 0.8),
                        int(rng.integers(1, 900)),
                        eps / 255,
                        0.0,
                        "aa",
                        position,
                    )
                    for i in attacked
                )
    ledger.save()
    size = os.path.getsize(tmp_path / "ledger.csv.gz")
    assert size < 600_000, size
    table = pd.read_csv(tmp_path / "ledger.csv.gz")
    assert list(table.columns) == list(COLUMNS) and len(table) == len(ledger)


def test_a_damaged_ledger_is_refused_and_kept(classroom_clip, tmp_path):
    path = tmp_path / zl.ledger.LEDGER_FILE
    path.write_bytes(gzip.compress(b"weights,context\n1,2\n")[:-6])  # cut short
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="damaged.*move it away"):
        evaluate.evaluate_robustness(classroom_clip, ["faces"], ["pgd-2"], [4], n_examples=10, out_dir=tmp_path)
    assert path.read_bytes() == before
    path.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    with pytest.raises(LedgerError, match="not a zsr_lab ledger"):
        Ledger(path)


def test_a_ledger_from_another_folder_is_refused(classroom_clip, tmp_path):
    kwargs = dict(n_examples=10, progress=False)
    evaluate.evaluate_robustness(classroom_clip, ["faces"], ["pgd-2"], [4], out_dir=tmp_path / "mine", **kwargs)
    other = Ledger(tmp_path / "other" / zl.ledger.LEDGER_FILE)
    other.add([("0123456789abcdef", "c", "faces", 0, 0.0, "clean", 1, 0, 0.0, 0.0, "", 0)])
    other.save()
    mine = tmp_path / "mine" / zl.ledger.LEDGER_FILE
    mine.write_bytes((tmp_path / "other" / zl.ledger.LEDGER_FILE).read_bytes())  # copied over by mistake
    before = mine.read_bytes()
    with pytest.raises(LedgerError, match="belongs to another evaluation folder"):
        evaluate.evaluate_robustness(classroom_clip, ["faces"], ["pgd-2"], [4], out_dir=tmp_path / "mine", **kwargs)
    with pytest.raises(LedgerError, match="0123456789abcdef"):
        evaluate.stored_results(tmp_path / "mine")
    assert mine.read_bytes() == before


def test_wilson_intervals_and_the_stratified_mean():
    low, high = uncertainty.wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(100 * 1.96**2 / (10 + 1.96**2), abs=0.01)  # the rule of three's cousin
    low, high = uncertainty.wilson_interval(60, 200)
    assert 23.5 < low < 24.5 and 36.5 < high < 37.5  # ±6.4 around 30 %
    mean, low, high = uncertainty.stratified_interval([30, 30, 30, 30], [200, 200, 200, 200])
    assert mean == 30 and high - mean == pytest.approx(1.96 * np.sqrt(0.3 * 0.7 / 800) * 100, rel=0.03)
    assert uncertainty.stratified_interval([0.0, 0.0], [100, 100])[2] > 0  # no set is certain


def test_with_mean_carries_stratified_intervals():
    table = pd.DataFrame(
        {
            "dataset": ["a", "b"],
            "attack": ["x", "x"],
            "eps": [1, 1],
            "n": [200, 100],
            "clean_accuracy": [80.0, 50.0],
            "robust_accuracy": [30.0, 10.0],
        }
    )
    means = zl.with_mean(table)
    assert means.robust_low.iloc[0] < 30 < means.robust_high.iloc[0]
    mean = means.iloc[-1]
    assert mean.robust_accuracy == 20 and mean.robust_low < 20 < mean.robust_high
    assert mean.robust_high - mean.robust_low < means.robust_high.iloc[1] - means.robust_low.iloc[1]


def _table(outcomes: dict, *, images="img", suite="s", n=None):
    rows = []
    for dataset, (clean, robust) in outcomes.items():
        rows.append(
            {
                "dataset": dataset,
                "attack": suite,
                "suite": suite,
                "eps": 4.0,
                "n": len(clean) if n is None else n,
                "images": images + dataset,
                "clean_outcomes": uncertainty.encode_outcomes(clean),
                "robust_outcomes": uncertainty.encode_outcomes(robust),
            }
        )
    return pd.DataFrame(rows)


def test_mcnemar_and_the_paired_difference():
    assert uncertainty.mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    assert uncertainty.mcnemar_exact(3, 3) == 1.0
    a = np.array([1] * 50 + [0] * 50, dtype=bool)
    b = np.array([1] * 45 + [0] * 55, dtype=bool)  # B loses 5 of the images A keeps, and nothing else
    diff = uncertainty.paired_difference([(a, b)])
    assert diff.difference == pytest.approx(5.0) and (diff.only_a, diff.only_b) == (5, 0)
    assert diff.p_value == pytest.approx(2 / 32) and diff.tie  # 5 discordant images cannot decide
    unpaired = uncertainty.unpaired_difference(50, 45, 100)
    assert diff.high - diff.low < unpaired[2] - unpaired[1]  # pairing is much tighter


def test_compare_ties_separates_and_refuses():
    rng = np.random.default_rng(1)
    clean = rng.random(400) < 0.9
    base = clean & (rng.random(400) < 0.4)
    same = base.copy()
    same[np.flatnonzero(base)[:3]] = False  # 3 images apart: a tie
    better = base | (clean & (rng.random(400) < 0.3))  # ~80 more images: separated
    a, b, c = (_table({"x": (clean, r)}) for r in (base, same, better))
    tie = zl.compare(a, b).set_index("measure")
    assert tie.loc["robust", "verdict"] == uncertainty.TIE and tie.loc["clean", "difference"] == 0
    apart = zl.compare(c, a, names=("C", "A")).set_index("measure")
    assert apart.loc["robust", "verdict"] == "C higher" and apart.loc["robust", "low"] > 0
    with pytest.raises(uncertainty.NotComparableError, match="different images"):
        zl.compare(a, _table({"x": (clean, base)}, images="other"))
    with pytest.raises(uncertainty.NotComparableError, match="share no"):
        zl.compare(a, _table({"x": (clean, base)}, suite="t"))
    with pytest.raises(uncertainty.NotComparableError, match="no per-image outcomes"):
        zl.compare(a.drop(columns="images"), b)
    with pytest.raises(uncertainty.NotComparableError, match="differ in precision"):
        zl.compare(a.assign(precision="fp32"), b.assign(precision="bf16"))
    ranks = zl.rank_groups({"a": a, "b": b, "c": c}, eps=4)
    assert dict(zip(ranks.model, ranks["rank"])) == {"c": 1, "a": 2, "b": 2}


def test_two_models_evaluated_on_the_same_images_compare(classroom_clip, tmp_path):
    protocol = zl.Protocol(("faces", "digits"), ("pgd-3",), (1.0, 4.0), n_examples={"digits": 100})
    first = evaluate.evaluate_robustness(classroom_clip, protocol, progress=False)
    again = evaluate.evaluate_robustness(classroom_clip, protocol, batch_size=16, progress=False)
    result = zl.compare(first, again)
    assert (result.difference == 0).all() and (result.verdict == uncertainty.TIE).all()
    other = evaluate.evaluate_robustness(classroom_clip, protocol.replace(seed=1), progress=False)
    with pytest.raises(uncertainty.NotComparableError, match="different images"):
        zl.compare(first, other)


def test_the_command_line_folder_table_holds_every_command(classroom_clip, tmp_path):
    common = ["--datasets", "faces", "--eps", "4", "--n-examples", "30", "--out", str(tmp_path), "--device", "cpu"]
    evaluate.main(["--attacks", "pgd-2", *common])
    evaluate.main(["--attacks", "cw-2", *common])
    written = evaluate.read_results_csv(tmp_path / "results.csv")
    assert list(written.attack) == ["PGD-2", "CW-2", "PGD-2", "CW-2"]  # both commands' rows, then their means
    assert list(written.dataset) == ["faces", "faces", "mean", "mean"]
    assert written.worst_case_accuracy.nunique() == 1 and written.robust_low.notna().all()


def test_images_needed_grows_as_the_difference_shrinks():
    assert uncertainty.images_needed(1.0, 5.0) == 3923  # several thousand per set for one point (the spec's figure)
    assert uncertainty.images_needed(2.0, 5.0) < uncertainty.images_needed(1.0, 5.0) / 3
    assert uncertainty.images_needed(1.0, 10.0) > uncertainty.images_needed(1.0, 5.0)
    with pytest.raises(ValueError, match="cannot differ by more"):
        uncertainty.images_needed(6.0, 5.0)


def test_published_differences_mark_what_their_own_samples_cannot_separate():
    table = zl.reported.published_differences().set_index(["higher", "lower"])
    close = table.loc[("ucat", "tga_zsr")]
    assert close["difference"] == pytest.approx(0.06) and close["verdict"] == uncertainty.TIE
    assert close["images per model"] == 16_000 and -1.1 < close["low"] < -0.8  # about ±1 on 16 × 1,000 images
    pgd = table[table["attack"] == "PGD-100"]
    assert len(pgd) == 5 and (pgd["verdict"] == "separated").all()  # whole splits: ±0.4 points
    assert (pgd["images per model"] == sum(zl.reported.WHOLE_SPLIT_SIZES.values())).all()
    one, many = uncertainty.unpaired_difference(30, 30, 1000, 16), uncertainty.unpaired_difference(30, 30, [1000] * 16)
    assert one == pytest.approx(many)
    shown = zl.reported.differences_table(zl.reported.published_differences()).set_index("higher / lower")
    row = shown.loc["ucat / tga_zsr"]
    assert row["robust (%)"] == "30.58 / 30.52" and row["images"] == "16,000"
    assert row["difference [95 %]"] == f"0.06 [{close['low']:.2f}, {close['high']:.2f}]"  # interval in one column
    assert row["source"].startswith("Lu et al.") and row["verdict"] == uncertainty.TIE


def test_training_seeds_are_evaluated_on_the_same_images():
    seeded = zl.recipe("tecoa", "classroom", seed=3).resolved()
    assert seeded.protocol.seed == zl.recipe("tecoa", "classroom").resolved().protocol.seed == 0
    assert zl.recipe("tecoa", "classroom", seed=3, eval_seed=2).resolved().protocol.seed == 2
    with pytest.raises(ValueError, match="eval_seed"):
        zl.recipe("tecoa", "classroom", eval_seed=-1).resolved()


def test_paired_rows_pairs_per_dataset_and_refuses_other_images():
    keep = np.array([1] * 30 + [0] * 70, dtype=bool)
    lose = keep.copy()
    lose[:10] = False
    a, b = _table({"x": (keep, keep), "y": (keep, keep)}), _table({"x": (keep, lose), "y": (keep, lose)})
    result = uncertainty.paired_rows(a, b, "robust_outcomes")
    assert result.difference == pytest.approx(10.0) and (result.only_a, result.only_b) == (20, 0)
    assert uncertainty.paired_rows(a, b.iloc[:1], "robust_outcomes") is None  # a dataset missing on one side
    assert (
        uncertainty.paired_rows(a, _table({"x": (keep, keep), "y": (keep, keep)}, images="o"), "robust_outcomes")
        is None
    )
