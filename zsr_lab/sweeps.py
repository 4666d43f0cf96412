"""Runs beyond one :func:`~zsr_lab.engine.fit`: training on several GPUs of this machine through torchrun
(:func:`launch`, what ``book/train_full.ipynb`` calls) and one-at-a-time sweeps of a method's options
(:func:`sensitivity`, shown by :func:`sensitivity_table`).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .engine import TrainResult, fit
from .evaluate import summarize
from .recipes import TrainConfig


def torchrun_command(config_file, gpus: int) -> list[str]:
    """The command that trains the run of ``config_file`` data-parallel on ``gpus`` GPUs of this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={gpus}",
        "-m",
        "zsr_lab.train",
        "--config",
        str(config_file),
    ]


def launch(config: TrainConfig, *, gpus: int = 1, progress: bool = True) -> TrainResult:
    """Train (or resume) and evaluate ``config`` on ``gpus`` GPUs: in this process for one, through torchrun for
    more (then the finished run and its evaluation are loaded here, not recomputed)."""
    config = config.resolved()
    if gpus > 1:
        if not config.run_dir:
            raise ValueError("a multi-GPU run needs config.run_dir (config_from_parameters fixes it)")
        config_file = config.save(Path(config.run_dir) / "requested_config.json")
        subprocess.run(torchrun_command(config_file, gpus), check=True)
    return fit(config, progress=progress)


def sensitivity(config: TrainConfig, options: dict[str, Sequence], *, progress: bool = False) -> pd.DataFrame:
    """One-at-a-time sweep of method options around ``config``: every value of every option is trained and
    evaluated with everything else as in ``config`` (finished runs, including ``config``'s own, are reused).

    Arguments:
        config: the run to sweep around (e.g. ``recipe("tga_zsr", "classroom")``).
        options: option → values, e.g. ``{"alpha": [0, 0.08, 0.64], "beta": [0, 0.05, 0.4]}``.
        progress: show the runs' progress bars.

    Returns:
        The mean over evaluation datasets per attack and ε (as :func:`zsr_lab.summarize`) with ``option``,
        ``value`` and ``fixed`` (the method's other options) columns. With ``config.run_dir`` set, each point
        trains into ``run_dir/<option>_<value>``; otherwise into its own default run folder.
    """
    base = config.resolved()
    unknown = sorted(set(options) - set(base.method_options))
    if unknown:
        raise ValueError(
            f"{base.method} has no option {', '.join(unknown)}; its options are "
            f"{', '.join(base.method_options) or 'none'}"
        )
    tables = []
    for option, values in options.items():
        fixed = ", ".join(
            f"{other} = {value:g}" if isinstance(value, float) else f"{other} = {value}"
            for other, value in base.method_options.items()
            if other != option
        )
        for value in values:
            point = dataclasses.replace(
                base,
                method_options={**base.method_options, option: value},
                run_dir=str(Path(base.run_dir) / f"{option}_{value:g}") if base.run_dir else None,
            )
            result = fit(point, progress=progress)
            summary = summarize(result.evaluation)
            tables.append(summary.assign(option=option, value=float(value), fixed=fixed))
    return pd.concat(tables, ignore_index=True)


def sensitivity_table(sweep: pd.DataFrame, eps: float | None = None) -> pd.DataFrame:
    """A :func:`sensitivity` table as a reader compares its points: one row per option, value and attack (the
    protocol's worst case and what it contains are separate rows) with the mean clean and robust accuracy in % to
    one decimal, as the book's sentences give them; ``eps`` keeps one budget."""
    rows = sweep if eps is None else sweep[sweep["eps"] == eps]
    columns = {"clean_accuracy": "clean (%)", "robust_accuracy": "robust (%)"}
    table = rows[["option", "value", "attack", "eps", *columns]].rename(columns=columns)
    return table.round({name: 1 for name in columns.values()}).reset_index(drop=True)
