"""What a run folder holds, and how it is written so that nothing finished is lost.

::

    <run_dir>/config.json            the resolved TrainConfig
    <run_dir>/log.jsonl              one record per logged step ("train", "holdout", TIMA's "text")
    <run_dir>/checkpoints/           epoch_<k>.pt, step_<n>.pt and epoch_latest.pt (weights, optimizer, scaler,
                                     schedule, RNG states, data position: what resuming needs)
    <run_dir>/weights.pt             the fine-tuned CLIP alone (what load_clip and open_clip read)
    <run_dir>/evaluation/            the evaluation engine's results.jsonl
    <run_dir>/results.csv            the evaluation table with its mean rows

Every file is written atomically (a temporary file, then a rename), so a crash leaves the previous version.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import torch

from . import settings
from .models import ZeroShotCLIP
from .recipes import TrainConfig, jsonable, method_revision
from .weights import CheckpointError

CHECKPOINT_FORMAT = 1
LATEST = "epoch_latest.pt"
WEIGHTS_FILE = "weights.pt"  # the fine-tuned CLIP alone: what load_clip and open_clip.create_model(pretrained=) read
RESULTS_CSV = "results.csv"
LOG_FILE = "log.jsonl"


def rng_state(device: torch.device) -> dict:
    """The random generators' states a resumed run needs (the CPU's, and the device's on a GPU)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def publish(source: Path, target: Path) -> None:
    """Make ``target`` a copy of ``source`` atomically (a hard link when the file system allows)."""
    tmp = settings.temporary_path(target)
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def save_checkpoint(state: dict, folder: Path, name: str | None, *, keep: int | None, steps_per_epoch: int) -> None:
    """Write ``state`` as ``folder/name`` and make it the latest (``name=None``: only ``epoch_latest.pt``, the
    periodic save within an epoch), then keep only the newest ``keep`` named checkpoints."""
    target = folder / (name or LATEST)
    settings.atomic_save(state, target)
    if name is not None:
        publish(target, folder / LATEST)
        prune_checkpoints(folder, keep, steps_per_epoch)


def load_checkpoint(path: Path, config: TrainConfig) -> dict:
    """A run's checkpoint, after checking that it belongs to ``config`` (same method revision, same settings that
    shape the weights); raises with what to do otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file: say which, and keep the others
        raise CheckpointError(
            f"could not read the run's checkpoint {path}: {type(err).__name__}: {err}\nMove it "
            f"away and run again; to resume from an earlier epoch instead, copy its epoch_<k>.pt to "
            f"{LATEST}"
        ) from err
    if state.get("method_revision", 1) != method_revision(config):
        raise ValueError(
            f"{path} was trained by an earlier revision of {config.method} (revision "
            f"{state.get('method_revision', 1)}, now {method_revision(config)}): it is not resumed; "
            f"choose a new run_dir"
        )
    saved = state.get("config", {})
    differ = [name for name in TrainConfig.SHAPING if name in saved and saved[name] != jsonable(getattr(config, name))]
    if differ:
        details = ", ".join(f"{n}: {saved[n]!r} → {getattr(config, n)!r}" for n in differ)
        raise ValueError(
            f"{path} belongs to a run with other settings ({details}); resume it with its own settings "
            f"or choose a new run_dir"
        )
    return state


def prune_checkpoints(checkpoints: Path, keep: int | None, steps_per_epoch: int) -> None:
    """Delete all but the newest ``keep`` epoch/step checkpoints (``epoch_latest.pt`` is a link of its own)."""
    if keep is None:
        return

    def step_of(path: Path) -> int:
        kind, _, number = path.stem.partition("_")
        return int(number) * (steps_per_epoch if kind == "epoch" else 1)

    saved = [p for p in checkpoints.glob("*.pt") if p.name != LATEST and p.stem.partition("_")[2].isdigit()]
    for old in sorted(saved, key=step_of)[:-keep]:
        old.unlink(missing_ok=True)


def weights_only_state(model: ZeroShotCLIP) -> dict:
    """The fine-tuned CLIP's weights (float32) and the input statistics it works with, as ``weights.pt`` holds
    them: ``open_clip.create_model(name, pretrained=file)`` reads the ``state_dict``, ``load_clip`` both."""
    return {
        "state_dict": {k: v.detach().float().cpu() for k, v in model.clip.state_dict().items()},
        "normalization": {"mean": model.pixel_mean.flatten().tolist(), "std": model.pixel_std.flatten().tolist()},
    }


def append_log(path: Path, record: dict) -> None:
    """Add one record to a run's ``log.jsonl``."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(run_dir) -> pd.DataFrame:
    """The training log of a run as a table (``kind`` = ``"train"`` or ``"holdout"``)."""
    path = Path(run_dir) / LOG_FILE
    if not path.exists():
        return pd.DataFrame()
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    # a resumed run logs some steps twice: keep the last record of each (kind, step)
    return pd.DataFrame(rows).drop_duplicates(["kind", "step"], keep="last").sort_values("step", kind="stable")
