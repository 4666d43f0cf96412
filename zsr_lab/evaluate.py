"""Zero-shot evaluation, clean and under attack, of any model on any registered dataset, at either scale.

- :func:`evaluate_zero_shot`: clean top-1 accuracy per dataset.
- :func:`evaluate_robustness`: the protocol's one entry point, model × datasets × attacks × ε → a tidy table of
  clean and robust accuracy, every row carrying its full protocol; results are appended to ``results.jsonl``
  as each dataset finishes, so an interrupted run resumes without recomputing or losing a finished dataset.
- ``python -m zsr_lab.evaluate ...``: the same from the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset

from . import datasets, distributed, settings
from .attacks import AttackConfig
from .classifier import dataset_classifier
from .models import ZeroShotCLIP, frozen_parameters, model_image_size
from .precision import autocast
from .pretrained import load_clip
from .progress import progress_bar
from .protocol import Protocol, check_split_sizes
from .scales import get_scale
from .suites import Suite, run_suite


def subset(dataset, n_examples: int | None, seed: int = 0):
    """A fixed random subset of ``n_examples`` (the whole dataset when ``None`` or larger)."""
    if n_examples is None or n_examples >= len(dataset):
        return dataset
    if n_examples <= 0:
        raise ValueError(f"n_examples must be positive, got {n_examples}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:n_examples].sort().values.tolist())


def _classifier_and_loader(
    model: ZeroShotCLIP, spec, data, templates, *, batch_size, num_workers, cache_dir
) -> DataLoader:
    """Install the dataset's zero-shot classifier on the model and return a loader over ``data``."""
    model.set_classifier(dataset_classifier(model, spec.name, templates=templates, cache_dir=cache_dir))
    return DataLoader(
        data,
        batch_size=batch_size,
        num_workers=settings.loader_workers(model.device, num_workers),
        pin_memory=model.device.type == "cuda",
    )


@torch.no_grad()
def zero_shot_accuracy(
    model: ZeroShotCLIP, loader: DataLoader, *, precision: str = "fp32", desc: str = "", progress: bool = True
) -> tuple[int, int]:
    """(correct, total) of the model's current classifier over a loader of [0,1] images."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=model.device)
    total = 0
    for images, labels in progress_bar(loader, desc=desc, disable=not progress, leave=False):
        images, labels = images.to(model.device, non_blocking=True), labels.to(model.device, non_blocking=True)
        with autocast(precision, model.device):
            logits = model(images)
        correct += (logits.argmax(dim=1) == labels).sum()  # stays on the device: no host sync per batch
        total += labels.numel()
    return int(correct), total


def evaluate_zero_shot(
    model: ZeroShotCLIP,
    dataset_names: Sequence[str],
    *,
    data_root=None,
    batch_size: int = 256,
    n_examples: int | None = None,
    seed: int = 0,
    precision: str = "fp32",
    templates: Sequence[str] | None = None,
    num_workers: int | None = None,
    download: bool = False,
    cache_dir=None,
    progress: bool = True,
) -> pd.DataFrame:
    """Clean zero-shot top-1 accuracy per dataset, as a tidy table.

    Arguments:
        model: a :class:`ZeroShotCLIP` (``load_clip``).
        dataset_names: registry keys (``list_datasets()``), e.g. ``get_scale("full").eval_datasets``.
        data_root: the data root (default ``$ZSR_LAB_DATA``).
        batch_size: images per forward pass.
        n_examples: evaluate a fixed random subset of this size per dataset (``None``: all).
        seed: seeds that subset.
        precision: ``"fp32"`` (default), or ``"bf16"``/``"fp16"`` autocast for the forward pass.
        templates: override the protocol template(s) of every dataset.
        num_workers: data-loading processes (default: 0 on CPU, up to 8 on GPU).
        download: let torchvision download missing datasets.

    Returns:
        One row per dataset: model, pretrained, dataset, split, template, n, accuracy (%), attack, precision,
        seed.
    """
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    autocast(precision, model.device)  # validate before any data is loaded
    rows = []
    for name in dataset_names:
        spec = datasets.get_spec(name)
        used_templates = list(templates) if templates is not None else list(spec.templates)
        data = datasets.load_dataset(
            name, data_root=data_root, image_size=model.image_size[0], download=download, verbose=progress
        )
        loader = _classifier_and_loader(
            model,
            spec,
            subset(data, n_examples, seed),
            used_templates,
            batch_size=batch_size,
            num_workers=num_workers,
            cache_dir=cache_dir,
        )
        correct, total = zero_shot_accuracy(model, loader, precision=precision, desc=spec.title, progress=progress)
        rows.append(
            {
                "model": model.model_name,
                "pretrained": str(model.pretrained),
                "dataset": name,
                "split": spec.split,
                "template": " | ".join(used_templates),
                "n": total,
                "accuracy": 100.0 * correct / total,
                "attack": "none",
                "precision": precision,
                "seed": seed,
            }
        )
    return pd.DataFrame(rows)


def with_mean(table: pd.DataFrame) -> pd.DataFrame:
    """Append the plain mean over datasets (the protocol's headline number), one per attack and ε if present."""
    values = [c for c in ("accuracy", "clean_accuracy", "robust_accuracy") if c in table.columns]
    keys = [c for c in ("attack", "eps") if c in table.columns and "robust_accuracy" in table.columns]
    groups = table.groupby(keys, sort=False) if keys else [((), table)]
    means = []
    for _, group in groups:
        # a column with one value in the group (method, model, weights, protocol fields) describes the mean too
        row = {
            column: group[column].iloc[0] if column in keys or _constant(group[column]) else ""
            for column in table.columns
        }
        row.update({"dataset": "mean", "n": int(group["n"].sum()), **{v: group[v].mean() for v in values}})
        means.append(row)
    return pd.concat([table, pd.DataFrame(means)], ignore_index=True)


def _constant(column: pd.Series) -> bool:
    values = [json.dumps(v, sort_keys=True, default=str) for v in column]
    return len(set(values)) == 1


def summarize(table: pd.DataFrame, by: Sequence[str] = ("method", "attack", "eps")) -> pd.DataFrame:
    """Mean clean and robust accuracy over datasets (the protocol's headline numbers), one row per ``by`` group."""
    keys = [k for k in by if k in table.columns]
    values = [c for c in ("clean_accuracy", "robust_accuracy", "accuracy") if c in table.columns]
    rows = table[table["dataset"] != "mean"]
    return rows.groupby(keys, sort=False)[values].mean().reset_index()


def select_attack(table: pd.DataFrame, attack: str | None = None) -> pd.DataFrame:
    """The rows of one attack or suite; by default the table's first, which in an evaluation under a protocol is
    its first suite: the worst case the protocol measures (``aa``, ``aa-10``), with PGD after it."""
    if "attack" not in table.columns or len(table) == 0:
        return table
    attack = table["attack"].iloc[0] if attack is None else attack
    if attack not in set(table["attack"]):
        raise ValueError(f"no rows under {attack!r}; the table has {', '.join(table['attack'].unique())}")
    return table[table["attack"] == attack]


def comparison_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method: mean clean accuracy and mean robust accuracy under every attack (or suite) at every ε
    of ``table`` (columns ``<attack> @ <ε>/255``, the worst-case suite first), and the number of datasets
    averaged — the protocol's headline numbers side by side. Methods keep their order of appearance."""
    summary = summarize(table)
    robust = summary.pivot_table(index="method", columns=["attack", "eps"], values="robust_accuracy", sort=False)
    robust.columns = [f"{attack} @ {eps:g}/255" for attack, eps in robust.columns]
    rows = table[table["dataset"] != "mean"].groupby("method", sort=False)
    facts = pd.DataFrame(
        {"datasets": rows["dataset"].nunique(), "clean": summary.groupby("method", sort=False)["clean_accuracy"].mean()}
    )
    return facts.join(robust).reset_index()


# ---- robust evaluation -------------------------------------------------------------------------------------

RESULTS_FILE = "results.jsonl"
RESULTS_FORMAT = 2  # rows keyed by the weights' content and the split size (format 1: by the checkpoint's path)
_KEY_FIELDS = (
    "model",
    "weights",
    "dataset",
    "split_size",
    "template",
    "suite",
    "members",
    "eps",
    "n_examples",
    "precision",
    "seed",
    "stopping",
    "cascade",
)
_MEMBER_RESULTS = ("robust_after", "robust_alone", "iterations_per_image", "max_perturbation", "out_of_box")


def _row_key(row: dict) -> str:
    """What a result depends on: the protocol, the weights' content and the split (not where the weights lie)."""
    key = {f: row.get(f) for f in _KEY_FIELDS}
    key["members"] = [{k: v for k, v in m.items() if k not in _MEMBER_RESULTS} for m in row["members"]]
    return json.dumps(key, sort_keys=True)


def load_results(path: Path | None, *, progress: bool = False) -> dict[str, dict]:
    """Finished rows of a results file. Rows of the previous format (keyed by the checkpoint's path, so new
    weights at the same path would have looked finished) are kept in the file but never reused."""
    if path is None or not path.exists():
        return {}
    rows, old = {}, 0
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash: that dataset is simply redone
                continue
            if row.get("format") != RESULTS_FORMAT:
                old += 1
                continue
            rows[_row_key(row)] = row
    if old and progress:
        print(
            f"{path.name}: {old} row(s) of an older format (keyed by the checkpoint's path, not its weights) "
            f"are kept in the file but not reused; those results are computed again"
        )
    return rows


def append_results(path: Path | None, rows: list[dict]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as f:
        # after a crash mid-line, start on a fresh line so the cut line never swallows a new row
        f.write("\n" * cut + "".join(json.dumps(row) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


def derived_seed(*parts) -> int:
    """A seed for one batch of one attack: fixed by the protocol's seed and the batch, so that a resumed or
    sharded evaluation draws what an uninterrupted one draws."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")


def load_protocol_data(protocol: Protocol, image_size: int, *, data_root=None, download: bool = False) -> dict:
    """Every dataset of the protocol (name → dataset), after the checks that need the data: no suite member
    needs more classes than a dataset has, no ``n_examples`` exceeds a split. Nothing is attacked yet.

    Raises:
        ValueError: with what to change.
        DatasetNotFoundError: a dataset is missing (the message names its layout).
    """
    for name in protocol.datasets:
        for suite in protocol.suites():
            suite.members_for(len(datasets.get_spec(name).classnames))
    loaded = {
        name: datasets.load_dataset(name, data_root=data_root, image_size=image_size, download=download, verbose=False)
        for name in protocol.datasets
    }
    check_split_sizes(protocol, {name: len(data) for name, data in loaded.items()})
    return loaded


def evaluate_robustness(
    model: ZeroShotCLIP,
    protocol: Protocol | Sequence[str] | str,
    attacks: Sequence[str | AttackConfig] | None = None,
    eps: Sequence[float] | None = None,
    *,
    data_root=None,
    batch_size: int = 256,
    compile: bool = False,
    num_workers: int | None = None,
    download: bool = False,
    out_dir=None,
    cache_dir=None,
    progress: bool = True,
    **protocol_fields,
) -> pd.DataFrame:
    """Clean and worst-case robust zero-shot accuracy of ``model`` on every dataset × suite × ε, as a tidy table.

    Arguments:
        model: a :class:`ZeroShotCLIP`.
        protocol: a :class:`~zsr_lab.protocol.Protocol`; or, as a shorthand, dataset names, with ``attacks``,
            ``eps`` and any other protocol field (``n_examples``, ``seed``, ``precision``, ``templates``,
            ``stopping``, ``cascade``) as keywords.
        attacks: suites such as ``"aa"`` (the default), ``"pgd-100"``, ``"pgd-100+cw-100+aa"`` (shorthand only).
        eps: budgets; ℓ∞ in units of 1/255 (shorthand only).
        batch_size: images per attacked batch (eval batch 256 in the protocol).
        compile: run the model through ``torch.compile`` (pays on GPUs; the first batches are slower).
        out_dir: where ``results.jsonl`` is written as each dataset finishes; finished rows found there (same
            protocol, same weights, same split) are reused, not recomputed.

    Returns:
        One row per dataset × suite × ε: model, pretrained, weights (a hash of the weights' content), dataset,
        split, split_size, template, n, clean_accuracy, robust_accuracy (the per-image worst case over the suite),
        attack (the suite's label), suite, members (per member: its protocol, ``robust_after`` (robust accuracy
        after it and every member before it), ``robust_alone`` (its own, without the cascade) and
        ``iterations_per_image``), eps, eps_pixels, norm, precision, seed, n_examples, stopping, cascade,
        max_perturbation and out_of_box (over all members); a one-attack suite also carries that attack's
        steps, step_size and restarts. Only clean-correct images are attacked.

    Raises:
        ValueError / TypeError: bad protocol (unknown dataset, suite or member, bad ε, ``n_examples`` larger than
            a split, a member that needs more classes than a dataset has), before any attack runs.
    """
    if not isinstance(protocol, Protocol):
        fields = dict(protocol_fields, datasets=protocol)
        if attacks is not None:
            fields["attacks"] = tuple(attacks) if not isinstance(attacks, (str, AttackConfig)) else (attacks,)
        if eps is not None:
            fields["eps"] = eps
        protocol = Protocol(**fields)
    elif attacks is not None or eps is not None or protocol_fields:
        raise TypeError("pass either a Protocol or dataset names with attacks/eps/protocol fields, not both")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (images per attacked batch), got {batch_size!r}")
    rank, world = distributed.rank_and_world()
    specs = [datasets.get_spec(name) for name in protocol.datasets]
    suites = protocol.suites()
    loaded = load_protocol_data(protocol, model.image_size[0], data_root=data_root, download=download)
    results_path = Path(out_dir) / RESULTS_FILE if out_dir is not None else None
    done = load_results(results_path, progress=progress and rank == 0)
    weights = model.weights_fingerprint()

    target = torch.compile(model, dynamic=True) if compile else model
    table = []
    for spec in specs:
        used_templates = list(protocol.templates) if protocol.templates is not None else list(spec.templates)
        n_classes = len(spec.classnames)
        base = {
            "format": RESULTS_FORMAT,
            "model": model.model_name,
            "pretrained": str(model.pretrained),
            "weights": weights,
            "dataset": spec.name,
            "split": spec.split,
            "split_size": len(loaded[spec.name]),
            "template": " | ".join(used_templates),
            "precision": protocol.precision,
            "seed": protocol.seed,
            "n_examples": protocol.examples_for(spec.name),
            "stopping": protocol.stopping,
            "cascade": protocol.cascade,
        }  # compile changes speed, not results: not in the key
        planned = [
            (suite, value, {**base, **_suite_protocol(suite, value, n_classes)})
            for suite in suites
            for value in protocol.eps
        ]
        pending = [(suite, e, row) for suite, e, row in planned if _row_key(row) not in done]
        if pending:
            data = distributed.shard(
                subset(loaded[spec.name], protocol.examples_for(spec.name), protocol.seed), rank, world
            )
            cuda = [model.device] if model.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):  # per-batch attack seeds leave the caller's RNG alone
                rows = _attack_dataset(
                    model,
                    target,
                    spec,
                    data,
                    used_templates,
                    pending,
                    protocol,
                    batch_size=batch_size,
                    num_workers=num_workers,
                    cache_dir=cache_dir,
                    progress=progress and rank == 0,
                )
            if rank == 0:
                append_results(results_path, rows)
            done.update({_row_key(row): row for row in rows})
        elif progress and rank == 0:
            print(
                f"{spec.title}: {len(planned)} result(s) already in {Path(out_dir).name}/{RESULTS_FILE}, not recomputed"
            )
        table += [done[_row_key(row)] for _, _, row in planned]
    return pd.DataFrame(table).drop(columns="format")


def _suite_protocol(suite: Suite, eps: float, n_classes: int) -> dict:
    eps = float(eps)  # 1 from Python and 1.0 from the command line are the same result
    members = suite.members_for(n_classes)
    row = {
        "attack": suite.label,
        "suite": suite.text,
        "norm": suite.norm,
        "eps": eps,
        "eps_pixels": members[0].pixel_eps(eps),
        "members": [m.protocol(eps) for m in members],
    }
    if len(suite.members) == 1:  # one attack: its settings as columns, as tables of single attacks show them
        row.update({k: row["members"][0][k] for k in ("steps", "step_size", "restarts")})
    return row


def _attack_dataset(
    model, target, spec, data, templates, pending, protocol: Protocol, *, batch_size, num_workers, cache_dir, progress
) -> list[dict]:
    loader = _classifier_and_loader(
        model, spec, data, templates, batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir
    )
    n_classes = model.class_embeddings.shape[0]
    device = model.device
    members = [suite.members_for(n_classes) for suite, _, _ in pending]
    # counters stay on the device; one host sync per dataset
    clean = torch.zeros((), dtype=torch.long, device=device)
    total = torch.zeros((), dtype=torch.long, device=device)
    counts = [torch.zeros(3, len(m), dtype=torch.long, device=device) for m in members]  # after, alone, passes
    max_delta = [[0.0] * len(m) for m in members]
    out_of_box = [[0.0] * len(m) for m in members]
    model.eval()
    with frozen_parameters(model):
        bars = progress_bar(loader, desc=spec.title, disable=not progress, leave=False)
        for batch, (images, labels) in enumerate(bars):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.no_grad(), autocast(protocol.precision, device):
                correct = target(images).argmax(1) == labels
            clean += correct.sum()
            total += labels.numel()
            x, y = images[correct], labels[correct]
            if len(y) == 0:
                continue
            for i, (suite, eps, _) in enumerate(pending):
                outcome = run_suite(
                    target,
                    members[i],
                    x,
                    y,
                    eps,
                    n_classes=n_classes,
                    precision=protocol.precision,
                    stopping=protocol.stopping,
                    cascade=protocol.cascade,
                    # the seeds of this batch's members (called within this iteration)
                    member_seed=lambda m: derived_seed(protocol.seed, spec.name, suite.text, m.label, eps, batch),  # noqa: B023
                )
                for k in range(len(members[i])):
                    counts[i][0, k] += outcome.robust_after[k].sum()
                    if outcome.robust_alone is not None:
                        counts[i][1, k] += outcome.robust_alone[k].sum()
                    counts[i][2, k] += outcome.iterations[k].sum()
                    max_delta[i][k] = max(max_delta[i][k], outcome.max_perturbation[k])
                    out_of_box[i][k] = max(out_of_box[i][k], outcome.out_of_box[k])
    for tensor in (clean, total, *counts):
        distributed.all_reduce(tensor)
    n = int(total)
    rows = []
    for i, (_, _, row) in enumerate(pending):
        after, alone, passes = (counts[i][j].tolist() for j in range(3))
        described = [
            {
                **member,
                "robust_after": 100.0 * after[k] / n,
                "robust_alone": None if protocol.cascade else 100.0 * alone[k] / n,
                "iterations_per_image": passes[k] / n,
                "max_perturbation": max_delta[i][k],
                "out_of_box": out_of_box[i][k],
            }
            for k, member in enumerate(row["members"])
        ]
        rows.append(
            {
                **row,
                "members": described,
                "n": n,
                "clean_accuracy": 100.0 * int(clean) / n,
                "robust_accuracy": described[-1]["robust_after"],
                "max_perturbation": max(max_delta[i]),
                "out_of_box": max(out_of_box[i]),
            }
        )
    return rows


def write_results_csv(table: pd.DataFrame, path) -> Path:
    """Write an evaluation table as CSV, each row's suite members as JSON (what
    :func:`zsr_lab.reported.load_run_results` reads back)."""
    path = Path(path)
    table = table.copy()
    if "members" in table.columns:
        table["members"] = [json.dumps(m) if isinstance(m, list) else m for m in table["members"]]
    table.to_csv(path, index=False)
    return path


def member_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per result row × suite member: the member's label, its robust accuracy after the cascade up to
    it (``robust_after``), its own (``robust_alone``, without the cascade) and its iterations per image, beside the
    row's dataset, suite, ε and worst case."""
    keep = [
        c
        for c in ("method", "dataset", "attack", "suite", "eps", "n", "clean_accuracy", "robust_accuracy")
        if c in table.columns
    ]
    rows = []
    for _, row in table.iterrows():
        for position, member in enumerate(row["members"]):
            rows.append(
                {
                    **{c: row[c] for c in keep},
                    "position": position + 1,
                    "member": member["attack"],
                    "robust_after": member["robust_after"],
                    "robust_alone": member["robust_alone"],
                    "iterations_per_image": member["iterations_per_image"],
                }
            )
    return pd.DataFrame(rows)


# ---- command line ------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zsr_lab.evaluate",
        description="Zero-shot robustness of a CLIP model: datasets × attack suites × ε → results.jsonl and a "
        "table; robust accuracy is the per-image worst case over each suite.",
        epilog="example: python -m zsr_lab.evaluate --scale full --data-root /data --attacks aa pgd-100 "
        "--eps 1 2 4 --n-examples 1000 --out runs/clip_eval",
    )
    parser.add_argument(
        "--scale",
        choices=["classroom", "scenes", "full"],
        default="classroom",
        help="model, dataset and protocol defaults (default: classroom)",
    )
    parser.add_argument("--model", help="open_clip architecture (default: the scale's)")
    parser.add_argument("--pretrained", help="pretrained tag or checkpoint file (default: the scale's)")
    parser.add_argument("--datasets", nargs="+", help="registry names (default: the scale's evaluation sets)")
    parser.add_argument(
        "--attacks",
        nargs="+",
        help="suites, each evaluated separately: aa, aa-standard, "
        "papers-aa, pgd-100, pgd-100+cw-100+aa, ... (default: the "
        "scale's)",
    )
    parser.add_argument("--eps", nargs="+", type=float, help="ℓ∞ budgets in units of 1/255 (default: the scale's)")
    parser.add_argument(
        "--n-examples",
        type=int,
        help="images per dataset, drawn with --seed (default: the scale's; 0: the whole split)",
    )
    parser.add_argument(
        "--stopping",
        choices=["any", "last"],
        help="PGD/CW: first misclassified iterate (any, default) or last iterate (the papers')",
    )
    parser.add_argument(
        "--no-cascade",
        action="store_true",
        help="every suite member attacks every image (reports each member's own accuracy)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per attacked batch (default: 256)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (pays on GPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", help="folder holding the datasets (default: $ZSR_LAB_DATA)")
    parser.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    parser.add_argument(
        "--out",
        required=True,
        help="run folder: results.jsonl is written and resumed here, and results.csv when every dataset is done",
    )
    parser.add_argument(
        "--label",
        help="the method column of results.csv, which the comparison chapter reads "
        "(default: the pretrained tag or the checkpoint's file name)",
    )
    parser.add_argument("--device", help="default: cuda if available")
    return parser


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Command-line entry; bad input exits with status 2 and a message saying what to fix."""
    parser = _parser()
    args = parser.parse_args(argv)
    setup = get_scale(args.scale)
    try:
        changes = {
            "datasets": args.datasets,
            "attacks": args.attacks,
            "eps": args.eps,
            "stopping": args.stopping,
            "precision": args.precision,
            "seed": args.seed,
        }
        changes = {k: v for k, v in changes.items() if v is not None}
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
        if args.n_examples is not None:
            if args.n_examples < 0:
                raise ValueError(f"--n-examples must be positive (or 0 for the whole split), got {args.n_examples}")
            changes["n_examples"] = args.n_examples or None
        if args.no_cascade:
            changes["cascade"] = False
        protocol = setup.protocol.replace(**changes)
        if args.data_root is not None and not Path(args.data_root).is_dir():
            raise FileNotFoundError(
                f"--data-root {args.data_root} does not exist; create it (with --download "
                f"torchvision fills it) or point it at the folder holding the datasets"
            )
    except (ValueError, TypeError, FileNotFoundError) as err:
        parser.error(str(err))
    with distributed.process_group() as is_main:
        table = _evaluate_command(args, setup, protocol, is_main)
    columns = ["dataset", "attack", "eps", "n", "clean_accuracy", "robust_accuracy"]
    if is_main:
        table.insert(0, "method", args.label or Path(str(args.pretrained or setup.pretrained)).stem)
        write_results_csv(with_mean(table), Path(args.out) / "results.csv")
        print(protocol.describe())
        print(with_mean(table)[columns].round(2).to_string(index=False))
    return table


def _evaluate_command(args: argparse.Namespace, setup, protocol: Protocol, is_main: bool) -> pd.DataFrame:
    """The command's evaluation; an error or an interruption exits with what to do."""
    device = distributed.local_device(args.device)
    model_name, pretrained = args.model or setup.model_name, args.pretrained or setup.pretrained
    try:
        # every dataset is checked before the model is loaded (a download) or anything is attacked
        load_protocol_data(protocol, model_image_size(model_name), data_root=args.data_root, download=args.download)
        model = load_clip(model_name, pretrained, device=device)
        table = evaluate_robustness(
            model,
            protocol,
            data_root=args.data_root,
            batch_size=args.batch_size,
            compile=args.compile,
            download=args.download,
            out_dir=args.out,
        )
    except (ValueError, OSError, RuntimeError) as err:  # missing data or weights, n_examples > a split, ...
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    except KeyboardInterrupt:
        if is_main:
            print(
                f"interrupted: the datasets already finished are kept in {Path(args.out) / RESULTS_FILE}; run the "
                f"same command again to resume",
                file=sys.stderr,
            )
        raise SystemExit(130) from None
    return table


if __name__ == "__main__":
    main()
