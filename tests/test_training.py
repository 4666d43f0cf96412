"""The training engine: schedule, data order, config checks, resume, divergence, data-parallel equivalence."""

import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

import zsr_lab as zl
from zsr_lab import engine, train
from zsr_lab.datasets import DatasetNotFoundError
from zsr_lab.engine import ResumableSampler, TrainingDivergedError, fit, lr_factor
from zsr_lab.recipes import TrainConfig, recipe


def tiny_config(tmp_path, **overrides):
    """A few seconds of training on the classroom architecture with random weights."""
    base = dict(
        method="tecoa",
        scale="classroom",
        pretrained="none",
        train_examples=96,
        holdout_examples=32,
        batch_size=16,
        epochs=2,
        lr=0.05,
        warmup_steps=2,
        eps=4.0,
        attack_step_size=2.0,
        checkpoint_every=4,
        log_every=2,
        eval_datasets=(),
        run_dir=str(tmp_path / "run"),
    )
    base.update(overrides)
    return TrainConfig(**base)


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_lr_schedule_warms_up_linearly_then_follows_a_cosine_to_zero():
    assert lr_factor(0, 10, 110) == pytest.approx(0.1)
    assert lr_factor(9, 10, 110) == pytest.approx(1.0)
    assert lr_factor(60, 10, 110) == pytest.approx(0.5)
    assert lr_factor(110, 10, 110) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(35, 10, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_sampler_shards_are_the_one_process_batches_and_skip_resumes_mid_epoch():
    data = list(range(50))
    single = ResumableSampler(data, world=1, rank=0, seed=3)
    single.set_epoch(2)
    order = list(single)
    shards = []
    for rank in range(2):
        sampler = ResumableSampler(data, world=2, rank=rank, seed=3)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    for batch in range(5):  # global batch 10 = two local batches of 5
        together = shards[0][5 * batch : 5 * batch + 5] + shards[1][5 * batch : 5 * batch + 5]
        assert sorted(together) == sorted(order[10 * batch : 10 * batch + 10])
    skipped = ResumableSampler(data, world=1, rank=0, seed=3, skip=20)
    skipped.set_epoch(2)
    assert list(skipped) == order[20:] and len(skipped) == 30


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(method="tga"), ValueError, "unknown method 'tga'"),
        (dict(eps=-1), ValueError, "ε must be ≥ 0"),
        (dict(lr="0.1"), TypeError, "lr must be a number"),
        (dict(epochs=1.5), TypeError, "epochs must be an integer"),
        (dict(batch_size=16, accumulation_steps=3), ValueError, "multiple of accumulation_steps"),
        (dict(optimizer="adam"), ValueError, "'sgd' or 'adamw'"),
        (dict(train_dataset="fashion"), ValueError, "did you mean .fashion_mnist"),
        (dict(data_root="/nonexistent/zsr"), FileNotFoundError, "does not exist"),
        (dict(method_options="repository"), TypeError, "method_options must be a dict"),
        (dict(eval_attacks=("pgd-x",)), ValueError, "cannot read"),
    ],
)
def test_bad_configs_fail_before_any_compute_with_the_fix(tmp_path, change, error, match):
    with pytest.raises(error, match=match):
        tiny_config(tmp_path, **change).resolved()


def test_missing_training_data_fails_before_the_model_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "load_clip", lambda *a, **k: pytest.fail("model loaded before the data check"))
    config = tiny_config(tmp_path, scale="full", model="zsr-classroom-vit", data_root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet-200"):
        fit(config, progress=False)


def test_recipes_carry_the_spec_constants():
    tecoa, pmg, fare = (recipe(m, "full").resolved() for m in ("tecoa", "pmg_aft", "fare"))
    assert (tecoa.lr, pmg.lr, fare.lr) == (1e-5, 5e-5, 1e-5)
    assert tecoa.optimizer == pmg.optimizer == "sgd" and tecoa.momentum == 0.9 and tecoa.weight_decay == 0
    assert (tecoa.eps, tecoa.attack_steps, tecoa.attack_step_size) == (1.0, 2, 1.0)
    assert (tecoa.batch_size, tecoa.epochs, tecoa.warmup_steps) == (128, 10, 1000)
    assert tecoa.train_dataset == "tiny_imagenet_train" and tecoa.model == "ViT-B-32-quickgelu"
    assert (fare.optimizer, fare.weight_decay, fare.warmup_steps, fare.attack_steps) == ("adamw", 1e-4, 1400, 10)
    assert len(tecoa.eval_datasets) == 16 and tecoa.eval_attacks == ("aa", "pgd-100")
    assert tecoa.protocol.n_examples == 1000 and tecoa.protocol.eps == (1.0,) and tecoa.protocol.stopping == "any"
    classroom = recipe("tecoa", "classroom").resolved().protocol
    assert classroom == zl.get_scale("classroom").protocol  # the chapters' runs share the scale's protocol
    whole = recipe("tecoa", "classroom", eval_n_examples={"digits": 0, "faces": 50}).resolved().protocol
    assert whole.examples_for("digits") is None and whole.examples_for("faces") == 50  # 0: the whole split
    assert recipe("tecoa", "full", eval_n_examples=0).resolved().protocol.n_examples is None


def test_a_chapters_runs_fix_scale_data_and_folders_once(tmp_path):
    runs = zl.Runs("classroom", data_root=str(tmp_path), download=True)
    assert runs.recipe("tecoa") == recipe("tecoa", "classroom", data_root=str(tmp_path), download=True)
    assert runs.recipe("tecoa").run_dir is None  # the cache's folder, named by the weights' settings
    scenes = runs.recipe("tga_zsr", "scenes-tga_zsr", at="scenes", lr=3e-4)
    assert (scenes.scale, scenes.lr, scenes.run_dir) == ("scenes", 3e-4, None)
    placed = zl.Runs("classroom", run_dir=str(tmp_path))
    assert placed.recipe("tecoa").run_dir == f"{tmp_path}/tecoa"
    assert placed.recipe("tecoa", "tecoa_lr3").run_dir == f"{tmp_path}/tecoa_lr3"
    with pytest.raises(ValueError, match="unknown scale"):
        zl.Runs("clasroom").recipe("tecoa")


@pytest.mark.parametrize(
    "method, method_options",
    [("tecoa", {})]  # the fast tier resumes one method; the full suite every kind of state
    + [
        pytest.param(method, options, marks=pytest.mark.slow)
        for method, options in (
            ("pmg_aft", {}),
            ("fare", {}),
            ("tima", {"text_steps": 5}),
            ("tima", {"schedule": "joint"}),
        )
    ],
)
def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, method, method_options):
    torch.set_num_threads(1)
    options = dict(attack_steps=2, optimizer="adamw", lr=1e-3) if method == "fare" else {}
    options["method_options"] = method_options
    straight = fit(tiny_config(tmp_path / "a", method=method, **options), progress=False)
    assert straight.checkpoint.name == "epoch_2.pt"

    def crash(step, model):
        if step == 10:  # after the mid-epoch checkpoint at step 8 (epochs are 6 steps)
            raise RuntimeError("simulated crash")

    config = tiny_config(tmp_path / "b", method=method, **options)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(config, hooks=[crash], progress=False)
    saved = torch.load(tmp_path / "b/run/checkpoints/epoch_latest.pt", weights_only=True)
    assert saved["step"] == 8 and saved["data_position"] == {"epoch": 1, "batch": 2}
    resumed = fit(config, progress=False)
    for name, value in weights(straight.checkpoint).items():
        assert torch.equal(value, weights(resumed.checkpoint)[name]), name
    assert (tmp_path / "b/run/checkpoints/epoch_1.pt").exists()


def test_interrupt_saves_the_current_step_and_a_finished_run_is_not_retrained(tmp_path, capsys):
    config = tiny_config(tmp_path, epochs=1)

    def interrupt(step, model):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, hooks=[interrupt], progress=True)
    assert "run the same command (or fit with the same config) again to resume" in capsys.readouterr().err
    assert torch.load(tmp_path / "run/checkpoints/epoch_latest.pt", weights_only=True)["step"] == 3
    first = fit(config, progress=False)
    capsys.readouterr()
    again = fit(config, hooks=[lambda step, model: pytest.fail("a finished run trained again")], progress=True)
    shown = capsys.readouterr()
    assert "finished: loaded, not retrained" in shown.out and "it/s" not in shown.err + shown.out  # no empty bar
    assert again.checkpoint == first.checkpoint
    for name, value in first.model.clip.state_dict().items():
        assert torch.equal(value, again.model.clip.state_dict()[name])
    history = again.history
    assert set(history["kind"]) == {"train", "holdout"}
    assert history.loc[history.kind == "train", "step"].is_unique


def test_checkpoint_loads_as_a_pretrained_model_and_other_settings_are_refused(tmp_path):
    result = fit(tiny_config(tmp_path, epochs=1), progress=False)
    loaded = zl.load_clip("zsr-classroom-vit", str(result.checkpoint), device="cpu")
    for name, value in result.model.clip.state_dict().items():
        assert torch.equal(value, loaded.clip.state_dict()[name])
    with pytest.raises(ValueError, match="lr: 0.05"):
        fit(tiny_config(tmp_path, epochs=1, lr=0.01), progress=False)
    with pytest.raises(FileExistsError, match="nothing was overwritten"):
        fit(tiny_config(tmp_path, epochs=1, resume=False), progress=False)


def test_old_checkpoints_are_pruned_and_the_weights_alone_load_in_open_clip(tmp_path):
    import open_clip

    result = fit(tiny_config(tmp_path, epochs=3, keep_checkpoints=1), progress=False)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["epoch_3.pt", "epoch_latest.pt"]
    assert result.weights == tmp_path / "run" / "weights.pt" and result.model.pretrained == str(result.weights)
    assert "optimizer" not in torch.load(result.weights, weights_only=True)  # the weights alone: a fraction of the size
    plain = open_clip.create_model("zsr-classroom-vit", pretrained=str(result.weights))
    for name, value in result.model.clip.state_dict().items():
        assert torch.equal(value, plain.state_dict()[name]), name
    loaded = zl.load_clip("zsr-classroom-vit", str(result.weights), device="cpu")
    torch.testing.assert_close(loaded.pixel_std, result.model.pixel_std)


def test_temporaries_of_a_killed_writer_are_removed_on_start(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)  # the pid of a process that has exited
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    stale = checkpoints / f".epoch_latest.pt.{dead}.tmp"
    stale.write_bytes(b"half a checkpoint")
    live = checkpoints / f".epoch_latest.pt.{os.getppid()}.tmp"  # a running writer's temporary stays
    live.write_bytes(b"being written")
    fit(tiny_config(tmp_path, epochs=1), progress=False)
    assert not stale.exists() and live.exists()


def test_a_holdout_that_takes_every_training_image_is_named_as_the_cause(tmp_path):
    with pytest.raises(ValueError, match="holdout_examples = 1,000,000 holds them all out of training"):
        fit(tiny_config(tmp_path, train_examples=None, holdout_examples=1_000_000), progress=False)
    with pytest.raises(ValueError, match=r"\(train_examples = 8\), fewer than one batch of 16"):
        fit(tiny_config(tmp_path, train_examples=8), progress=False)


def test_every_entry_point_writes_results_csv_with_the_method_on_every_row(tmp_path):
    result = fit(
        tiny_config(
            tmp_path, epochs=1, eval_datasets=("faces",), eval_attacks=("pgd-2",), eval_eps=(4.0,), eval_n_examples=16
        ),
        progress=False,
    )
    table = pd.read_csv(result.run_dir / "results.csv")
    assert list(table["dataset"]) == ["faces", "mean"] and set(table["method"]) == {"tecoa"}
    assert table["weights"].nunique() == 1 and table.loc[1, "robust_accuracy"] == table.loc[0, "robust_accuracy"]
    assert set(zl.reported.load_run_results(result.run_dir)["method"]) == {"tecoa"}


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(step, model):
        if step == 5:
            with torch.no_grad():
                model.clip.visual.proj.fill_(float("nan"))

    with pytest.raises(TrainingDivergedError, match="loss became nan at step 6.*lower lr"):
        fit(tiny_config(tmp_path), hooks=[poison], progress=False)
    saved = torch.load(tmp_path / "run/checkpoints/epoch_latest.pt", weights_only=True)
    assert saved["step"] == 4
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_gradient_accumulation_gives_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    one = fit(tiny_config(tmp_path / "a", epochs=1), progress=False)
    two = fit(tiny_config(tmp_path / "b", epochs=1, accumulation_steps=2), progress=False)
    for name, value in weights(one.checkpoint).items():
        torch.testing.assert_close(value, weights(two.checkpoint)[name], rtol=1e-4, atol=1e-5)


def _cli(args, tmp_path, processes=1):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "zsr_lab.train"]
    if processes > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "zsr_lab.train",
        ]
    return subprocess.run(launcher + args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.slow
def test_two_processes_with_the_same_global_batch_end_with_the_same_weights(tmp_path):
    common = [
        "--method",
        "pmg_aft",
        "--pretrained",
        "none",
        "--train-examples",
        "64",
        "--holdout-examples",
        "0",
        "--batch-size",
        "16",
        "--steps",
        "3",
        "--warmup-steps",
        "1",
        "--lr",
        "0.05",
        "--eps",
        "4",
        "--attack-step-size",
        "2",
        "--eval-datasets",
    ]
    single = _cli(common + ["--run-dir", "one"], tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    double = _cli(common + ["--run-dir", "two"], tmp_path, processes=2)
    assert double.returncode == 0, double.stderr[-2000:]
    a, b = weights(tmp_path / "one/checkpoints/step_3.pt"), weights(tmp_path / "two/checkpoints/step_3.pt")
    for name, value in a.items():
        torch.testing.assert_close(value, b[name], rtol=1e-4, atol=1e-6)
    torch.manual_seed(0)  # the engine seeds the random initialisation with the run's seed
    start = zl.load_clip("zsr-classroom-vit", None, device="cpu").clip.state_dict()
    assert torch.equal(start["positional_embedding"], a["positional_embedding"])  # the text side stays frozen
    assert (start["visual.proj"] - a["visual.proj"]).abs().max() > 1e-4  # and the image tower trained


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "tecoo"], "did you mean 'tecoa'"),
        (["--method", "tecoa", "--eps", "-2"], "ε must be ≥ 0"),
        (["--method", "pmg_aft", "--option", "form"], "KEY=VALUE"),
        (["--method", "tecoa", "--data-root", "/nonexistent/zsr"], "does not exist"),
    ],
)
def test_command_line_rejects_bad_input_with_status_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_names_a_damaged_checkpoint_and_ends_an_interrupt_in_one_line(tmp_path, capsys, monkeypatch):
    damaged = tmp_path / "cut.pt"
    damaged.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    args = [
        "--method",
        "tecoa",
        "--pretrained",
        str(damaged),
        "--train-examples",
        "64",
        "--holdout-examples",
        "0",
        "--batch-size",
        "16",
        "--steps",
        "1",
        "--eval-datasets",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        train.main(args)
    assert exit_info.value.code == 2 and f"could not read checkpoint {damaged}" in capsys.readouterr().err

    def interrupted(config, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "fit", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--method", "tecoa", "--eval-datasets", "--run-dir", str(tmp_path / "run")])
    assert exit_info.value.code == 130


def test_training_benchmark_runs_the_engine_step_and_the_naive_one(classroom_clip, capsys):
    from zsr_lab import speed_training

    speed_training.main(["--scale", "classroom", "--steps", "1", "--batch-size", "8", "--n-classes", "5"])
    out = capsys.readouterr().out
    for method in ("tecoa", "pmg_aft"):
        assert f"{method}, zsr_lab fp32:" in out and f"{method}, naive reference fp32" in out
    assert out.count("the naive step") == 2


def test_summarize_averages_over_datasets_per_method_and_budget():
    table = pd.DataFrame(
        {
            "method": ["a", "a", "a", "b"],
            "dataset": ["x", "y", "mean", "x"],
            "attack": ["PGD-10"] * 4,
            "eps": [4.0] * 4,
            "clean_accuracy": [80.0, 60.0, 0.0, 50.0],
            "robust_accuracy": [30.0, 10.0, 0.0, 40.0],
        }
    )
    summary = zl.summarize(table).set_index("method")
    assert summary.loc["a", "clean_accuracy"] == 70.0 and summary.loc["a", "robust_accuracy"] == 20.0
    assert summary.loc["b", "robust_accuracy"] == 40.0
    counted = zl.summarize(table.assign(n=[300, 100, 400, 50])).set_index("method")
    assert counted.loc["a", "n"] == 400 and counted.loc["b", "n"] == 50  # the images each mean rests on
    assert list(counted.columns[:3]) == ["attack", "eps", "n"]
    shown = zl.summary_table(zl.summarize(table.assign(n=[300, 100, 400, 50])))
    assert list(shown.columns) == ["method", "attack", "ε (/255)", "n", "clean (%)", "robust (%)"]
    low, high = counted.loc["a", ["robust_low", "robust_high"]]
    assert shown["robust (%)"].iloc[0] == f"20.0 [{low:.1f}, {high:.1f}]"  # the mean and its 95 % interval
    by_seed = zl.summary_table(zl.summarize(table.assign(n=100, seed=[0, 1, 0, 1]), by=("method", "seed")))
    assert list(by_seed.columns) == ["method", "seed", "n", "clean (%)", "robust (%)"]  # every group shown
    per_set = zl.summary_table(table.assign(n=100, worst_case_accuracy=[20.0, 5.0, 0.0, 40.0]))
    assert list(per_set.columns)[-1] == "worst, all attacks (%)" and per_set.iloc[0, -1] == 20.0


def test_training_plots_show_every_loss_term_and_one_point_per_method(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    history = pd.DataFrame(
        [
            {"kind": "train", "step": 5, "loss": 2.0, "ce": 1.5, "larm": 6.0, "lr": 0.1},
            {"kind": "train", "step": 10, "loss": 1.0, "ce": 0.8, "larm": 3.0, "lr": 0.1},
            {
                "kind": "holdout",
                "step": 10,
                "clean_accuracy": 80.0,
                "robust_accuracy": 50.0,
                "attack": "PGD-10 at 4/255",
            },
        ]
    )
    fig = zl.plots.plot_training(history, scale="classroom")
    assert sorted(line.get_label() for line in fig.axes[0].get_lines()) == ["ce", "larm", "loss"]
    summary = pd.DataFrame(
        {"method": ["a", "b"], "eps": [4.0, 4.0], "clean_accuracy": [70.0, 90.0], "robust_accuracy": [30.0, 20.0]}
    )
    ax = zl.plots.plot_tradeoff(summary, scale="classroom", eps=4.0)
    points = ax.collections[0].get_offsets()
    assert sorted(map(tuple, points.tolist())) == [(70.0, 30.0), (90.0, 20.0)]
    assert "classroom scale" in ax.get_title()


def test_pretrained_baseline_is_evaluated_under_the_run_protocol(classroom_clip):
    config = recipe(
        "tecoa", "classroom", eval_datasets=("digits",), eval_attacks=("pgd-2",), eval_eps=(1.0,), eval_n_examples=40
    )
    table = engine.evaluate_pretrained(config, progress=False)
    assert list(table["method"]) == ["CLIP (zero-shot)"] and table["pretrained"].iloc[0] == "zsr_lab"
    assert table["n"].iloc[0] == 40 and table["clean_accuracy"].iloc[0] > 80
    assert table["robust_accuracy"].iloc[0] <= table["clean_accuracy"].iloc[0]


def test_outside_torchrun_the_distributed_helpers_are_the_one_process_case(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not zl.distributed.launched_by_torchrun() and zl.distributed.rank_and_world() == (0, 1)
    with zl.distributed.process_group() as is_main:
        assert is_main and not torch.distributed.is_initialized()
    assert zl.distributed.local_device("cpu") == torch.device("cpu")
    data = list(range(10))
    assert zl.distributed.shard(data, 0, 1) is data
    assert [list(zl.distributed.shard(data, rank, 3)) for rank in range(3)] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    tensor = torch.tensor([1.0, 2.0])
    assert zl.distributed.all_reduce(tensor) is tensor and tensor.tolist() == [1.0, 2.0]
