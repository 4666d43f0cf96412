import pandas as pd
import pytest

import zsr_lab as zl
from zsr_lab import evaluate
from zsr_lab.sanity import check_evaluation


def test_pgd_at_a_large_eps_drives_robust_accuracy_to_zero(classroom_clip):
    table = evaluate.evaluate_robustness(classroom_clip, ["digits", "fashion_mnist"], ["pgd-10"], [32],
                                         n_examples=200, progress=False)
    assert (table.clean_accuracy > 80).all()
    assert (table.robust_accuracy <= 2.0).all(), table[["dataset", "robust_accuracy"]]


def test_rows_carry_the_full_protocol(classroom_clip):
    table = evaluate.evaluate_robustness(classroom_clip, "faces", ["cw-2"], [1, 4], n_examples=40, seed=5,
                                         precision="bf16", progress=False)
    assert len(table) == 2
    row = table.iloc[1]
    assert (row.attack, row.norm, row.eps, row.steps, row.restarts, row.precision, row.seed, row.n) == \
        ("CW-2", "Linf", 4, 2, 1, "bf16", 5, 40)
    assert row.eps_pixels == pytest.approx(4 / 255) and row.step_size == pytest.approx(1 / 255)
    assert row.template == "A close-up photo of a {}." and row.split
    assert row.max_perturbation <= row.eps_pixels + 1e-6 and row.out_of_box == 0
    assert row.robust_accuracy <= row.clean_accuracy


def test_resumed_evaluation_equals_an_uninterrupted_one(classroom_clip, tmp_path, monkeypatch):
    args = (classroom_clip, ["digits", "textures", "faces"], ["pgd-3", "cw-3"], [2, 4])
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
    table = pd.DataFrame({"dataset": ["a", "b", "a", "b"], "attack": ["PGD-10"] * 4, "eps": [1, 1, 4, 4],
                          "n": [10, 10, 10, 10], "clean_accuracy": [80.0, 60.0, 80.0, 60.0],
                          "robust_accuracy": [40.0, 20.0, 10.0, 0.0]})
    means = zl.with_mean(table).query("dataset == 'mean'")
    assert list(means.eps) == [1, 4] and list(means.robust_accuracy) == [30.0, 5.0]
    assert list(means.clean_accuracy) == [70.0, 70.0]


def test_sanity_checks_pass_on_an_honest_evaluation(classroom_clip):
    report = check_evaluation(classroom_clip, "digits", eps=(1, 4), large_eps=32, steps=(3, 10), n_examples=100)
    assert report.passed.all(), report.to_string()
    assert len(report) == 5


@pytest.mark.parametrize("argv, message", [
    (["--datasets", "imagenett"], "unknown dataset 'imagenett'"),
    (["--datasets", "digits", "--eps", "-1"], "ε must be ≥ 0"),
    (["--datasets", "digits", "--attacks", "pgd-x"], "NAME-STEPS"),
    (["--datasets", "cifar10", "--data-root", "/nonexistent/zsr_data"], "--data-root /nonexistent/zsr_data does not exist"),
])
def test_cli_bad_input_exits_2_with_a_clear_message(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate.main([*argv, "--out", str(tmp_path)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_missing_dataset_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--datasets", "cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err


def test_cli_writes_and_resumes_results(tmp_path, capsys, classroom_clip):
    argv = ["--datasets", "faces", "--attacks", "pgd-2", "--eps", "4", "--n-examples", "30",
            "--out", str(tmp_path), "--device", "cpu"]
    first = evaluate.main(argv)
    second = evaluate.main(argv)
    assert "already in" in capsys.readouterr().out
    pd.testing.assert_frame_equal(first, second)


def test_torchrun_with_two_processes_counts_every_example_once(tmp_path, classroom_clip):
    import os
    import subprocess
    import sys

    argv = ["-m", "zsr_lab.evaluate", "--datasets", "faces", "digits", "--attacks", "pgd-3", "--eps", "4",
            "--device", "cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    subprocess.run([*torchrun, *argv, "--out", str(tmp_path / "ddp")], check=True, env=os.environ.copy(),
                   capture_output=True, timeout=600)
    single = evaluate.main([*argv[2:], "--out", str(tmp_path / "single")])
    ddp = pd.read_json(tmp_path / "ddp" / "results.jsonl", lines=True)
    assert list(ddp.n) == list(single.n) == [100, 899]
    assert list(ddp.clean_accuracy) == list(single.clean_accuracy)
    # the two processes draw other random starts than one process: robust accuracy agrees up to noise
    assert (abs(ddp.robust_accuracy - single.robust_accuracy) < 4).all()


def test_results_survive_a_cut_line_and_int_or_float_eps(classroom_clip, tmp_path):
    kwargs = dict(n_examples=20, progress=False, out_dir=tmp_path)
    first = evaluate.evaluate_robustness(classroom_clip, "faces", ["pgd-2"], [4], **kwargs)
    with open(tmp_path / evaluate.RESULTS_FILE, "a") as f:
        f.write('{"model": "zsr-clas')  # a crash in the middle of writing a line
    both = evaluate.evaluate_robustness(classroom_clip, "faces", ["pgd-2", "cw-2"], [4.0], **kwargs)
    pd.testing.assert_frame_equal(both.iloc[:1], first)  # 4 and 4.0 are the same, reused result
    rows = evaluate._load_results(tmp_path / evaluate.RESULTS_FILE)
    assert sorted(row["attack"] for row in rows.values()) == ["CW-2", "PGD-2"]
