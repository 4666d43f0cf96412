import json

import pandas as pd
import pytest
import torch

import zsr_lab as zl
from zsr_lab import evaluate
from zsr_lab.sanity import check_evaluation


def test_pgd_at_a_large_eps_drives_robust_accuracy_to_zero(classroom_clip):
    table = evaluate.evaluate_robustness(
        classroom_clip, ["digits", "fashion_mnist"], ["pgd-10"], [32], n_examples=200, progress=False
    )
    assert (table.clean_accuracy > 80).all()
    assert (table.robust_accuracy <= 2.0).all(), table[["dataset", "robust_accuracy"]]


def test_rows_carry_the_full_protocol(classroom_clip):
    table = evaluate.evaluate_robustness(
        classroom_clip, "faces", ["cw-2"], [1, 4], n_examples=40, seed=5, precision="bf16", progress=False
    )
    assert len(table) == 2
    row = table.iloc[1]
    assert (row.attack, row.norm, row.eps, row.steps, row.restarts, row.precision, row.seed, row.n) == (
        "CW-2",
        "Linf",
        4,
        2,
        1,
        "bf16",
        5,
        40,
    )
    assert (row.n_examples, row.split_size, row.stopping, row.cascade) == (40, 100, "any", True)
    assert row.eps_pixels == pytest.approx(4 / 255) and row.step_size == pytest.approx(1 / 255)
    assert row.template == "A close-up photo of a {}." and row.split and len(row.weights) == 16
    assert row.max_perturbation <= row.eps_pixels + 1e-6 and row.out_of_box == 0
    assert row.robust_accuracy <= row.clean_accuracy
    assert row.members[0]["kappa"] == 50 and row.members[0]["robust_after"] == row.robust_accuracy


def test_a_suite_row_reports_every_member_and_the_worst_case(classroom_clip):
    protocol = zl.Protocol(("digits",), ("pgd-3+aa-5",), (2,), n_examples=60, cascade=False)
    row = evaluate.evaluate_robustness(classroom_clip, protocol, progress=False).iloc[0]
    assert (row.attack, row.suite) == ("pgd-3+aa-5", "pgd-3+aa-5")
    assert [m["attack"] for m in row.members] == ["PGD-3", "APGD-CE-5", "APGD-T-5"]
    assert row.members[2]["targets"] == 9 and row.members[1]["step_size"] is None
    assert row.robust_accuracy <= min(m["robust_alone"] for m in row.members)
    afters = [m["robust_after"] for m in row.members]
    assert afters == sorted(afters, reverse=True) and afters[-1] == row.robust_accuracy
    assert all(m["iterations_per_image"] > 0 for m in row.members)
    members = zl.member_table(pd.DataFrame([row]))
    assert list(members.member) == ["PGD-3", "APGD-CE-5", "APGD-T-5"] and list(members.position) == [1, 2, 3]


@pytest.mark.slow
def test_the_classroom_protocol_with_three_targets_breaks_what_nine_targets_break(classroom_clip):
    """The classroom aims APGD-T at 3 classes instead of AutoAttack's 9 (half the evaluation time) because it
    found the same worst case on every classroom model measured; on the pre-trained CLIP it must keep doing so."""
    classroom = zl.get_scale("classroom").protocol
    assert classroom.attacks[0] == "pgd-10+aa-10:targets=3"
    rows = {}
    for suite in ("pgd-10+aa-10", classroom.attacks[0]):
        protocol = zl.Protocol(("fashion_mnist",), (suite,), (1.0,), classroom.n_examples)
        rows[suite] = evaluate.evaluate_robustness(classroom_clip, protocol, progress=False)
    nine, three = rows.values()
    assert (three.members[0][2]["attack"], three.members[0][2]["targets"], nine.members[0][2]["targets"]) == (
        "APGD-T-10",
        3,
        9,
    )
    assert (three.n == nine.n).all() and (three.n == 200).all()
    assert list(three.robust_accuracy) == list(nine.robust_accuracy)
    assert (three.robust_accuracy > 50).all()  # enough images survive PGD for the targeted member to matter


def test_new_weights_at_the_same_path_are_evaluated_again(classroom_clip, tmp_path):
    """Rows are keyed by the weights' content: a retrained checkpoint saved where the old one was is not
    mistaken for it."""
    clip = zl.frozen_copy(classroom_clip)
    kwargs = dict(n_examples=40, progress=False, out_dir=tmp_path)
    before = evaluate.evaluate_robustness(clip, "faces", ["pgd-2"], [4], **kwargs)
    with torch.no_grad():
        clip.clip.visual.conv1.weight.mul_(-1)  # other weights, same name and "pretrained" tag
    after = evaluate.evaluate_robustness(clip, "faces", ["pgd-2"], [4], **kwargs)
    assert before.weights[0] != after.weights[0] and before.pretrained[0] == after.pretrained[0]
    assert after.clean_accuracy[0] != before.clean_accuracy[0]
    assert len((tmp_path / evaluate.RESULTS_FILE).read_text().splitlines()) == 2


def test_results_of_the_previous_format_are_not_reused(classroom_clip, tmp_path, capsys):
    old = {
        "model": classroom_clip.model_name,
        "pretrained": "zsr_lab",
        "dataset": "faces",
        "attack": "PGD-2",
        "eps": 4.0,
        "n_examples": 40,
        "robust_accuracy": 99.0,
        "clean_accuracy": 99.0,
    }
    (tmp_path / evaluate.RESULTS_FILE).write_text(json.dumps(old) + "\n")
    table = evaluate.evaluate_robustness(classroom_clip, "faces", ["pgd-2"], [4], n_examples=40, out_dir=tmp_path)
    assert "older format" in capsys.readouterr().out and table.robust_accuracy[0] != 99.0


@pytest.mark.parametrize(
    "fields, error, message",
    [
        (dict(attacks=("aaa",)), ValueError, "did you mean the suite 'aa'"),
        (
            dict(attacks=("apgd_t-10",), datasets=("faces",)),
            ValueError,
            "needs at least 4 classes, but this dataset has 2",
        ),
        (dict(n_examples=500), ValueError, "larger than the split of textures \\(135 images\\)"),
        (dict(eps=(300,)), ValueError, "larger than the whole pixel range"),
        (dict(eps=(-1,)), ValueError, "ε must be ≥ 0"),
        (dict(stopping="first"), ValueError, "stopping must be 'any'"),
        (dict(n_examples=0), ValueError, "positive integer or None"),
    ],
)
def test_bad_protocols_fail_before_any_attack(classroom_clip, monkeypatch, fields, error, message):
    monkeypatch.setattr(evaluate, "_attack_dataset", lambda *a, **k: pytest.fail("attacked before the check"))
    protocol = dict(datasets=zl.CLASSROOM_DATASETS, attacks=("pgd-2",), eps=(1,), n_examples=None) | fields
    with pytest.raises(error, match=message):
        evaluate.evaluate_robustness(classroom_clip, progress=False, protocol=protocol.pop("datasets"), **protocol)


def test_protocols_are_values():
    a = zl.Protocol(["digits"], "aa", 1, {"digits": 100})
    b = zl.Protocol(("digits",), ("aa",), (1.0,), {"digits": 100})
    assert a == b and hash(a) == hash(b) and a.examples_for("digits") == 100 and a.examples_for("faces") is None
    assert "APGD-CE-100 → APGD-T-100" in a.describe() and "ε ∈ {1}/255" in a.describe()
    full = zl.get_scale("full").protocol
    assert full.attacks == ("aa",) and full.n_examples == 1000 and len(full.datasets) == 16
    # a chapter's "300 per dataset" on the classroom sets: the two smaller splits whole, said per dataset
    assert zl.get_scale("classroom").examples(300) == {
        "fashion_mnist": 300,
        "digits": 300,
        "textures": None,
        "faces": None,
    }
    assert zl.get_scale("classroom").examples(None) is None


def test_resumed_evaluation_equals_an_uninterrupted_one(classroom_clip, tmp_path, monkeypatch):
    args = (classroom_clip, ["digits", "textures", "faces"], ["pgd-3", "cw-3+aa-3"], [2, 4])  # a suite resumes too
    kwargs = dict(n_examples=60, progress=False)
    uninterrupted = evaluate.evaluate_robustness(*args, out_dir=tmp_path / "a", **kwargs)

    real = evaluate._attack_dataset
    calls = []

    def crash_on_second_dataset(model, target, spec, *a, **k):
        calls.append(spec.name)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(model, target, spec, *a, **k)

    monkeypatch.setattr(evaluate, "_attack_dataset", crash_on_second_dataset)
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_robustness(*args, out_dir=tmp_path / "b", **kwargs)
    assert len((tmp_path / "b" / "results.jsonl").read_text().splitlines()) == 4  # digits' rows kept

    calls.clear()
    monkeypatch.setattr(evaluate, "_attack_dataset", lambda *a, **k: calls.append(a[2].name) or real(*a, **k))
    resumed = evaluate.evaluate_robustness(*args, out_dir=tmp_path / "b", **kwargs)
    assert calls == ["textures", "faces"]  # digits was not recomputed
    pd.testing.assert_frame_equal(resumed, uninterrupted)


def test_with_mean_gives_one_mean_per_attack_and_eps():
    table = pd.DataFrame(
        {
            "dataset": ["a", "b", "a", "b"],
            "attack": ["PGD-10"] * 4,
            "eps": [1, 1, 4, 4],
            "n": [10, 10, 10, 10],
            "clean_accuracy": [80.0, 60.0, 80.0, 60.0],
            "robust_accuracy": [40.0, 20.0, 10.0, 0.0],
        }
    )
    means = zl.with_mean(table).query("dataset == 'mean'")
    assert list(means.eps) == [1, 4] and list(means.robust_accuracy) == [30.0, 5.0]
    assert list(means.clean_accuracy) == [70.0, 70.0]


def test_sanity_checks_pass_on_an_honest_evaluation(classroom_clip):
    report = check_evaluation(
        classroom_clip, "digits", suite="aa-5", eps=(1, 4), large_eps=32, steps=(3, 10), n_examples=100
    )
    assert report.passed.all(), report.to_string()
    assert len(report) == 6


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--datasets", "imagenett"], "unknown dataset 'imagenett'"),
        (["--datasets", "digits", "--eps", "-1"], "ε must be ≥ 0"),
        (["--datasets", "digits", "--attacks", "pgd-x"], "NAME-STEPS"),
        (["--datasets", "digits", "--attacks", "apgd"], "now a suite"),
        (["--datasets", "faces", "--attacks", "apgd_t-10"], "needs at least 4 classes"),
        (["--datasets", "textures", "--n-examples", "500", "--attacks", "pgd-1"], "larger than the split of textures"),
        (
            ["--datasets", "cifar10", "--data-root", "/nonexistent/zsr_data"],
            "--data-root /nonexistent/zsr_data does not exist",
        ),
    ],
)
def test_cli_bad_input_exits_2_with_a_clear_message(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate.main([*argv, "--out", str(tmp_path)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_batch_size_zero_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--datasets", "faces", "--batch-size", "0", "--out", str(tmp_path)])
    assert info.value.code == 2 and "--batch-size must be at least 1, got 0" in capsys.readouterr().err


def test_cli_interrupt_says_how_to_resume(tmp_path, capsys, monkeypatch, classroom_clip):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate_robustness", interrupted)
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--datasets", "faces", "--out", str(tmp_path), "--device", "cpu"])
    assert info.value.code == 130
    assert "interrupted: the datasets already finished are kept" in capsys.readouterr().err


def test_cli_checks_every_dataset_before_loading_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(zl.evaluate, "load_clip", lambda *a, **k: pytest.fail("the model was loaded first"))
    with pytest.raises(SystemExit):
        evaluate.main(["--datasets", "faces", "cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path / "r")])
    assert "CIFAR-10 not found" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_runs_without_runpy_warnings():
    import subprocess
    import sys

    for module in ("zsr_lab.evaluate", "zsr_lab.train"):
        run = subprocess.run(
            [sys.executable, "-W", "error::RuntimeWarning", "-m", module, "--help"], capture_output=True, text=True
        )
        assert run.returncode == 0 and "RuntimeWarning" not in run.stderr, run.stderr


def test_cli_missing_dataset_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--datasets", "cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err


def test_cli_writes_and_resumes_results(tmp_path, capsys, classroom_clip):
    argv = [
        "--datasets",
        "faces",
        "--attacks",
        "pgd-2",
        "--eps",
        "4",
        "--n-examples",
        "30",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
    ]
    first = evaluate.main(argv)
    second = evaluate.main(argv)
    assert "already recorded" in capsys.readouterr().out
    pd.testing.assert_frame_equal(first, second)
    written = pd.read_csv(tmp_path / "results.csv")  # the results format every entry point writes
    assert list(written["dataset"]) == ["faces", "mean"] and set(written["method"]) == {"zsr_lab"}


@pytest.mark.slow
def test_torchrun_with_two_processes_counts_every_example_once(tmp_path, classroom_clip):
    import os
    import subprocess
    import sys

    argv = [
        "-m",
        "zsr_lab.evaluate",
        "--datasets",
        "faces",
        "digits",
        "--attacks",
        "pgd-3",
        "--eps",
        "4",
        "--n-examples",
        "0",
        "--device",
        "cpu",
    ]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    subprocess.run(
        [*torchrun, *argv, "--out", str(tmp_path / "ddp")],
        check=True,
        env=os.environ.copy(),
        capture_output=True,
        timeout=600,
    )
    single = evaluate.main([*argv[2:], "--out", str(tmp_path / "single")])
    ddp = pd.read_json(tmp_path / "ddp" / "results.jsonl", lines=True)
    assert list(ddp.n) == list(single.n) == [100, 899]
    assert list(ddp.clean_accuracy) == list(single.clean_accuracy)
    # each image's random start comes from its identity: two processes reach the verdicts of one, image by image
    assert list(ddp.robust_outcomes) == list(single.robust_outcomes)
    assert list(ddp.robust_accuracy) == list(single.robust_accuracy)


def test_results_survive_a_cut_line_and_int_or_float_eps(classroom_clip, tmp_path):
    kwargs = dict(n_examples=20, progress=False, out_dir=tmp_path)
    first = evaluate.evaluate_robustness(classroom_clip, "faces", ["pgd-2"], [4], **kwargs)
    with open(tmp_path / evaluate.RESULTS_FILE, "a") as f:
        f.write('{"model": "zsr-clas')  # a crash in the middle of writing a line
    both = evaluate.evaluate_robustness(classroom_clip, "faces", ["pgd-2", "cw-2"], [4.0], **kwargs)
    # 4 and 4.0 are the same, reused result; only the worst case over everything recorded has grown by CW-2
    accumulated = [c for c in first.columns if c.startswith("worst_case")]
    pd.testing.assert_frame_equal(both.iloc[:1].drop(columns=accumulated), first.drop(columns=accumulated))
    assert both.worst_case_members.iloc[0] == ["pgd-2", "cw-2"]
    assert both.worst_case_accuracy.iloc[0] <= first.worst_case_accuracy.iloc[0]
    rows = evaluate.load_results(tmp_path / evaluate.RESULTS_FILE)
    assert sorted(row["attack"] for row in rows.values()) == ["CW-2", "PGD-2"]
