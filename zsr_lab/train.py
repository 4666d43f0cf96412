"""The training command line, ``python -m zsr_lab.train``: a method's recipe at a scale (or a saved config), any
field overridden by a flag, trained and evaluated by :func:`zsr_lab.engine.fit`; under ``torchrun`` data-parallel.

    python -m zsr_lab.train --method tecoa --scale classroom
    torchrun --nproc_per_node 4 -m zsr_lab.train --method fare --scale full --data-root /data --run-dir runs/fare

A bad config exits with status 2 and a message saying what to fix, before any compute.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
from collections.abc import Sequence

from . import datasets, distributed
from .engine import TrainingDivergedError, TrainResult, fit
from .evaluate import with_mean
from .methods import METHODS
from .pretrained import WeightsUnavailableError
from .recipes import TrainConfig, recipe
from .weights import CheckpointError


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zsr_lab.train",
        description="Adversarial fine-tuning of CLIP's image tower with any registered method, then zero-shot "
        "evaluation. Starts from the method's recipe at the chosen scale; every option overrides it. "
        "Under torchrun it runs data-parallel.",
        epilog="example: torchrun --nproc_per_node 4 -m zsr_lab.train --method tecoa --scale full "
        "--data-root /data --run-dir runs/tecoa",
    )
    parser.add_argument("--method", help=f"one of {', '.join(sorted(METHODS))} (required unless --config)")
    parser.add_argument(
        "--scale",
        default="classroom",
        help="classroom (CPU, minutes), scenes (classroom objects on photos) or full (ViT-B/32, GPU)",
    )
    parser.add_argument(
        "--config",
        help="a JSON file of config fields (e.g. a run's config.json) instead of the "
        "method's recipe; the other flags override it",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option, e.g. --option form=repository (PMG-AFT)",
    )
    typed = {
        "model": str,
        "pretrained": str,
        "train_dataset": str,
        "train_examples": int,
        "holdout_examples": int,
        "eps": float,
        "attack_steps": int,
        "attack_step_size": float,
        "optimizer": str,
        "lr": float,
        "momentum": float,
        "weight_decay": float,
        "warmup_steps": int,
        "epochs": int,
        "steps": int,
        "batch_size": int,
        "accumulation_steps": int,
        "precision": str,
        "seed": int,
        "run_dir": str,
        "log_every": int,
        "checkpoint_every": int,
        "eval_every": int,
        "keep_checkpoints": int,
        "eval_n_examples": int,
        "eval_batch_size": int,
        "eval_precision": str,
        "eval_stopping": str,
        "eval_seed": int,
        "data_root": str,
        "num_workers": int,
        "device": str,
    }
    for name, kind in typed.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, dest=name)
    parser.add_argument("--eval-datasets", nargs="*", help="zero-shot sets (default: the scale's; none: skip)")
    parser.add_argument("--eval-attacks", nargs="+", help="suites, e.g. aa pgd-100 pgd-100+cw-100+aa")
    parser.add_argument("--eval-eps", nargs="+", type=float, help="ℓ∞ budgets in units of 1/255")
    parser.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    parser.add_argument("--compile", action="store_true", help="torch.compile the attacked model (pays on GPUs)")
    parser.add_argument(
        "--no-resume", dest="resume", action="store_false", help="refuse to continue an existing run in --run-dir"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> TrainResult | None:
    """Command-line entry; a bad config exits with status 2 and a message saying what to fix, before any compute."""
    parser = _parser()
    args = parser.parse_args(argv)
    overrides = {
        k: v for k, v in vars(args).items() if k not in ("method", "scale", "option", "config") and v is not None
    }
    for flag in ("download", "compile"):
        if not overrides.get(flag):
            overrides.pop(flag, None)
    if overrides.get("resume", True):
        overrides.pop("resume", None)
    for name in ("eval_datasets", "eval_attacks", "eval_eps"):
        if name in overrides:
            overrides[name] = tuple(overrides[name])
    try:
        options = {}
        for item in args.option:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--option {item!r}: write KEY=VALUE, e.g. --option form=repository")
            options[key] = _literal(value)
        if args.config:
            config = TrainConfig.load(args.config)
            changes = {
                **overrides,
                **({"method": args.method} if args.method else {}),
                **({"method_options": {**config.method_options, **options}} if options else {}),
            }
            config = dataclasses.replace(config, **changes).resolved()
        elif args.method:
            config = recipe(args.method, args.scale, method_options=options, **overrides).resolved()
        else:
            raise ValueError("give --method (e.g. --method tecoa) or --config FILE")
    except (ValueError, TypeError, FileNotFoundError, json.JSONDecodeError) as err:
        parser.error(str(err))
    with distributed.process_group() as is_main:
        result = _train_command(config)
    if is_main:
        print(f"final checkpoint: {result.checkpoint}")
        if len(result.evaluation):
            columns = ["dataset", "attack", "eps", "n", "clean_accuracy", "robust_accuracy"]
            print(with_mean(result.evaluation)[columns].round(2).to_string(index=False))
    return result


def _train_command(config: TrainConfig) -> TrainResult:
    """``fit``, with the errors a user can fix turned into a message and exit status 2."""
    try:
        return fit(config)
    # ValueError: what only the data can tell, e.g. --eval-n-examples larger than a split (before training);
    # OSError: missing data or weights, an unreadable image; RuntimeError: a damaged checkpoint, weights offline
    except (
        TrainingDivergedError,
        CheckpointError,
        WeightsUnavailableError,
        datasets.DatasetLayoutError,
        ValueError,
        OSError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    except KeyboardInterrupt:  # fit has saved the step and said how to resume
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
