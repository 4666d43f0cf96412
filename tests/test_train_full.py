"""book/train_full.ipynb, the full-scale training job: runs under papermill at classroom scale, checks its
parameters in the first cell, writes its results into the run folder."""

import sys
from pathlib import Path

import papermill
import pytest

import zsr_lab as zl

NOTEBOOK = Path(__file__).resolve().parents[1] / "book" / "train_full.ipynb"


def _run(tmp_path, name, **parameters):
    return papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / f"{name}.ipynb"), parameters=parameters, kernel_name="python3", progress_bar=False
    )


def _text(notebook) -> str:
    return "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


@pytest.mark.slow
def test_default_parameters_train_at_classroom_scale_write_results_and_a_rerun_resumes(tmp_path):
    first = _run(tmp_path, "first")
    run_dir = zl.recipe("tecoa", "classroom").resolved().default_run_dir()  # the chapters' TeCoA run
    assert f"run folder: {zl.settings.shown_path(run_dir)}" in _text(first)
    written = {p.name for p in run_dir.iterdir()}
    assert {"results.csv", "training.png", "accuracy_eps1.png", "accuracy_eps4.png"} <= written
    results = (run_dir / "results.csv").read_text().splitlines()
    # 4 sets + their mean, for the worst case and PGD-10, at 2 ε; every member's protocol kept as JSON
    assert results[0].startswith("method,model,pretrained,weights,dataset") and len(results) == 1 + 20
    loaded = zl.reported.load_run_results(run_dir)
    assert list(loaded.attack.unique()) == ["pgd-10+aa-10:targets=3", "PGD-10"]
    assert [m["attack"] for m in loaded.members.iloc[0]] == ["PGD-10", "APGD-CE-10", "APGD-T-10"]
    again = _run(tmp_path, "again")
    assert "finished: loaded, not retrained" in _text(again)


@pytest.mark.slow
def test_a_bad_parameter_stops_the_first_cell_with_what_to_fix(tmp_path):
    # one papermill run (a kernel start costs ~10 s); the other messages come from the same call, checked below
    with pytest.raises(papermill.PapermillExecutionError, match="unknown method 'tga'") as error:
        _run(tmp_path, "bad", method="tga")
    assert "config_from_parameters" in error.value.source  # the check cell, before any compute


def test_parameters_are_checked_before_any_compute():
    with pytest.raises(ValueError, match="gpus must be at least 1"):
        zl.config_from_parameters("tecoa", "classroom", gpus=0)
    with pytest.raises(TypeError, match="eval_eps must be a list"):
        zl.config_from_parameters("tecoa", "classroom", eval_eps=4)
    with pytest.raises(TypeError, match="gpus must be an integer"):
        zl.config_from_parameters("tecoa", "classroom", gpus="2")
    with pytest.raises(ValueError, match=r"CUDA device\(s\) are visible"):
        zl.config_from_parameters("tecoa", "classroom", gpus=64)
    with pytest.raises(TypeError, match="unknown parameter"):
        zl.config_from_parameters("tecoa", "classroom", learning_rate=0.1)
    config = zl.config_from_parameters("tecoa", "classroom", epochs=None, eval_eps=[1, 2])
    assert config.epochs == 1 and config.eval_eps == (1.0, 2.0) and config.run_dir


def test_more_than_one_gpu_goes_through_torchrun(tmp_path):
    command = zl.sweeps.torchrun_command(tmp_path / "config.json", 4)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc_per_node=4" in command
    assert command[-3:] == ["zsr_lab.train", "--config", str(tmp_path / "config.json")]


def test_the_command_line_trains_from_a_saved_config(tmp_path):
    config = zl.TrainConfig(
        method="tecoa",
        scale="classroom",
        pretrained="none",
        train_examples=32,
        holdout_examples=8,
        batch_size=16,
        epochs=1,
        eval_datasets=(),
        run_dir=str(tmp_path / "run"),
    )
    path = config.save(tmp_path / "requested.json")
    assert zl.TrainConfig.load(path).resolved() == config.resolved()
    result = zl.train.main(["--config", str(path), "--lr", "0.01"])
    assert result.config.lr == 0.01 and result.checkpoint.exists()
    (tmp_path / "bad.json").write_text('{"method": "tecoa", "learning_rate": 1}')
    with pytest.raises(SystemExit) as exit_code:
        zl.train.main(["--config", str(tmp_path / "bad.json")])
    assert exit_code.value.code == 2


def test_an_evaluation_that_cannot_run_stops_the_training_command_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        zl.train.main(
            [
                "--method",
                "tecoa",
                "--scale",
                "classroom",
                "--pretrained",
                "none",
                "--train-examples",
                "32",
                "--batch-size",
                "16",
                "--eval-datasets",
                "textures",
                "--eval-n-examples",
                "500",
                "--run-dir",
                str(tmp_path / "run"),
            ]
        )
    assert info.value.code == 2
    assert "larger than the split of textures (135 images)" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was trained


def test_every_notebook_parameter_reaches_the_config():
    import json
    import re

    cells = json.loads(NOTEBOOK.read_text())["cells"]
    parameters = next("".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", []))
    names = [line.split("=")[0].strip() for line in parameters.splitlines() if "=" in line and line[0] != "#"]
    check = next("".join(c["source"]) for c in cells if "config_from_parameters(" in "".join(c["source"]))
    call = check[check.index("config_from_parameters(") :]
    missing = [name for name in names if not re.search(rf"\b{name}\b", call)]
    assert not missing, f"notebook parameters not passed to config_from_parameters: {missing}"
    for name in (
        "steps",
        "train_examples",
        "holdout_examples",
        "eval_n_examples",
        "eval_batch_size",
        "eval_precision",
        "lr",
        "keep_checkpoints",
        "config_overrides",
    ):
        assert name in names
    smoke = zl.config_from_parameters(
        "tecoa",
        "classroom",
        steps=2,
        train_examples=64,
        holdout_examples=0,
        eval_n_examples=20,
        eval_batch_size=64,
        eval_precision="bf16",
        lr=0.01,
        keep_checkpoints=1,
        warmup_steps=1,
    )
    assert (smoke.steps, smoke.train_examples, smoke.holdout_examples, smoke.eval_n_examples) == (2, 64, 0, 20)
    assert (smoke.eval_batch_size, smoke.eval_precision, smoke.lr, smoke.keep_checkpoints) == (64, "bf16", 0.01, 1)


def test_the_banner_names_the_run_s_own_weights():
    banner = zl.get_scale("full").banner(model="ViT-B-32-quickgelu", pretrained="runs/tecoa/weights.pt")
    assert "model ViT-B-32-quickgelu (runs/tecoa/weights.pt)" in banner and "(openai)" not in banner


def test_a_run_folder_in_the_cache_is_shown_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSR_LAB_CACHE", str(tmp_path / "cache"))
    shown = zl.settings.shown_path(tmp_path / "cache" / "runs" / "tecoa")
    assert shown == "$ZSR_LAB_CACHE/runs/tecoa" and str(tmp_path) not in shown  # names no machine's folder
    assert zl.settings.shown_path(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")  # a folder the user chose
    monkeypatch.delenv("ZSR_LAB_CACHE")
    assert zl.settings.shown_path(zl.settings.cache_dir() / "runs") == "~/.cache/zsr_lab/runs"
