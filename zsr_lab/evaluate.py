"""Zero-shot evaluation, clean and under attack, of any model on any registered dataset, at either scale.

- :func:`evaluate_zero_shot`: clean top-1 accuracy per dataset.
- :func:`evaluate_robustness`: the protocol's one entry point, model × datasets × attacks × ε → a tidy table of
  clean and robust accuracy, every row carrying its full protocol; results are appended to ``results.jsonl``
  as each dataset finishes, so an interrupted run resumes without recomputing or losing a finished dataset.
- ``python -m zsr_lab.evaluate ...``: the same from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset

from . import datasets, distributed, settings
from .attack_base import seed_from
from .attacks import ATTACKS, AttackConfig
from .classifier import dataset_classifier
from .ledger import CLEAN, LEDGER_FILE, Ledger, LedgerError, context_of
from .memo import remember
from .models import ZeroShotCLIP, frozen_parameters, model_image_size
from .precision import autocast
from .pretrained import load_clip
from .progress import progress_bar
from .protocol import Protocol, check_split_sizes
from .scales import get_scale
from .suites import Suite, run_suite
from .uncertainty import encode_outcomes, images_digest, stratified_interval, wilson_interval
from .worklog import work


def subset(dataset, n_examples: int | None, seed: int = 0):
    """A fixed random subset of ``n_examples`` (the whole dataset when ``None`` or larger)."""
    if n_examples is None or n_examples >= len(dataset):
        return dataset
    return Subset(dataset, subset_indices(len(dataset), n_examples, seed))


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
        seed. Each dataset's count is cached by content (:mod:`zsr_lab.memo`: the model's weights, the classifier
        built for it, the images as the ledger names them, the settings), so an evaluation run again is read.
    """
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    autocast(precision, model.device)  # validate before any data is loaded
    with work("evaluating", "zero-shot") as record:
        record.cached = True
        weights = model.weights_fingerprint()  # once: at full scale it hashes 600 MB
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
            # the model's weights and the classifier just installed, and the images as the ledger names them: a
            # chapter run again (or the book build after the tests) reads the count instead of classifying again
            key = dict(
                weights=weights,
                classifier=model.class_embeddings,
                dataset=name,
                split=spec.split,
                split_size=len(data),
                n_examples=n_examples,
                seed=seed,
                size=model.image_size,
                precision=precision,
                batch_size=batch_size,
            )
            model.eval()  # as classifying leaves it, read or not
            (correct, total), cached = remember(
                "zero_shot",
                key,
                partial(zero_shot_accuracy, model, loader, precision=precision, desc=spec.title, progress=progress),
            )
            record.cached &= cached
            rows.append(
                {
                    "model": model.model_name,
                    "pretrained": str(model.pretrained),
                    "dataset": name,
                    "split": spec.split,
                    "template": " | ".join(used_templates),
                    "n": total,
                    "accuracy": 100.0 * correct / total,
                    **dict(zip(("accuracy_low", "accuracy_high"), wilson_interval(correct, total))),
                    "attack": "none",
                    "precision": precision,
                    "seed": seed,
                }
            )
    return pd.DataFrame(rows)


INTERVALS = {
    "accuracy": "accuracy",
    "clean_accuracy": "clean",
    "robust_accuracy": "robust",
    "worst_case_accuracy": "worst_case",
}  # accuracy column → the prefix of its interval's columns (``clean_low``, ``clean_high``)


def with_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a 95 % Wilson interval beside every per-dataset accuracy (``<prefix>_low``/``_high``, see
    :data:`INTERVALS`), computed from ``n`` where the rows do not carry one already (tables of older files)."""
    table = table.copy()
    rows = table["dataset"] != "mean" if "dataset" in table.columns else pd.Series(True, index=table.index)
    for value, prefix in INTERVALS.items():
        if value not in table.columns or "n" not in table.columns:
            continue
        for side in ("low", "high"):
            if f"{prefix}_{side}" not in table.columns:
                table[f"{prefix}_{side}"] = np.nan
        missing = rows & table[f"{prefix}_low"].isna() & table[value].notna()
        if missing.any():
            n = table.loc[missing, "n"].astype(float)
            successes = (table.loc[missing, value].astype(float) * n / 100).round()
            low, high = wilson_interval(successes.to_numpy(), n.to_numpy())
            table.loc[missing, f"{prefix}_low"], table.loc[missing, f"{prefix}_high"] = low, high
    return table


def with_mean(table: pd.DataFrame) -> pd.DataFrame:
    """Append the plain mean over datasets (the protocol's headline number), one per attack and ε if present, with
    its 95 % interval (each dataset a stratum: :func:`zsr_lab.uncertainty.stratified_interval`); every dataset
    row gets its own interval (:func:`with_intervals`)."""
    table = with_intervals(table)
    values = [c for c in INTERVALS if c in table.columns]
    keys = [c for c in ("attack", "eps") if c in table.columns and "robust_accuracy" in table.columns]
    groups = table.groupby(keys, sort=False) if keys else [((), table)]
    means = []
    for _, group in groups:
        # a column with one value in the group (method, model, weights, protocol fields) describes the mean too
        row = {
            column: group[column].iloc[0] if column in keys or _constant(group[column]) else ""
            for column in table.columns
        }
        row.update({"dataset": "mean", "n": int(group["n"].sum())})
        for value in values:
            present = group[group[value].notna()]
            if len(present) == 0:
                row[value] = np.nan
                continue
            mean, low, high = stratified_interval(present[value].astype(float), present["n"].astype(float))
            prefix = INTERVALS[value]
            row.update({value: mean, f"{prefix}_low": low, f"{prefix}_high": high})
        means.append(row)
    return pd.concat([table, pd.DataFrame(means)], ignore_index=True)


def _constant(column: pd.Series) -> bool:
    values = [json.dumps(v, sort_keys=True, default=str) for v in column]
    return len(set(values)) == 1


def summarize(table: pd.DataFrame, by: Sequence[str] = ("method", "attack", "eps")) -> pd.DataFrame:
    """Mean clean and robust accuracy over datasets (the protocol's headline numbers), one row per ``by`` group;
    when the table has each dataset's ``n``, also the number of images the mean rests on (``n``, over its
    datasets) and each mean's 95 % interval (``clean_low``, ``clean_high``, ...: each dataset a stratum)."""
    keys = [k for k in by if k in table.columns]
    values = [c for c in ("clean_accuracy", "robust_accuracy", "accuracy") if c in table.columns]
    rows = table[table["dataset"] != "mean"]
    summary = rows.groupby(keys, sort=False)[values].mean().reset_index()
    if "n" not in rows.columns:
        return summary
    summary.insert(len(keys), "n", rows.groupby(keys, sort=False)["n"].sum().astype(int).to_numpy())
    for value in values:
        bounds = rows.groupby(keys, sort=False)[[value, "n"]].apply(
            lambda group, v=value: pd.Series(
                stratified_interval(group[v].astype(float), group["n"].astype(float))[1:], index=["low", "high"]
            )
        )
        summary[f"{INTERVALS[value]}_low"] = bounds["low"].to_numpy()
        summary[f"{INTERVALS[value]}_high"] = bounds["high"].to_numpy()
    return summary


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """A :func:`summarize` table as a reader compares it: its groups (method, attack, ε, a seed ...), the images the
    means rest on, and each mean accuracy with its 95 % interval in one column ("73.8 [70.2, 77.1]", one decimal as
    the book's sentences round), narrow enough for a page's column. An evaluation's own rows (one per dataset) are
    shown the same way."""
    measured = {f"{prefix}_{end}" for prefix in INTERVALS.values() for end in ("low", "high")} | set(INTERVALS)
    shown = summary[[c for c in summary.columns if c not in measured]].copy()
    for value, label in (
        ("clean_accuracy", "clean (%)"),
        ("robust_accuracy", "robust (%)"),
        ("worst_case_accuracy", "worst, all attacks (%)"),
    ):
        if value not in summary.columns:
            continue
        low, high = f"{INTERVALS[value]}_low", f"{INTERVALS[value]}_high"
        if low in summary.columns:
            shown[label] = [
                f"{np.round(v, 1):.1f} [{np.round(lo, 1):.1f}, {np.round(hi, 1):.1f}]"
                for v, lo, hi in zip(summary[value], summary[low], summary[high])
            ]
        else:
            shown[label] = summary[value].round(1)
    return shown.rename(columns={"eps": "ε (/255)"}).reset_index(drop=True)


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
    averaged and (when the table has each dataset's ``n``) the images they hold — the protocol's headline numbers
    side by side. Methods keep their order of appearance."""
    summary = summarize(table)
    robust = summary.pivot_table(index="method", columns=["attack", "eps"], values="robust_accuracy", sort=False)
    robust.columns = [f"{attack} @ {eps:g}/255" for attack, eps in robust.columns]
    rows = table[table["dataset"] != "mean"].groupby("method", sort=False)
    by_method = summary.groupby("method", sort=False)
    facts = {"datasets": rows["dataset"].nunique()}
    if "n" in summary.columns:
        facts["n"] = by_method["n"].first()  # every attack and ε of a method attacks the same images
    facts["clean"] = by_method["clean_accuracy"].mean()
    return pd.DataFrame(facts).join(robust).reset_index()


# ---- robust evaluation -------------------------------------------------------------------------------------

RESULTS_FILE = "results.jsonl"
# format 3: per-image seeds (verdicts independent of the batch), per-image outcomes and intervals in every row;
# format 2 rows (random starts drawn per batch) and format 1 rows (keyed by the checkpoint's path) are not reused
RESULTS_FORMAT = 3
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
    """Finished rows of a results file (the last one of each key). Rows of earlier formats are kept in the file
    but never reused: format 1 was keyed by the checkpoint's path, format 2 drew random starts per batch."""
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
            f"{path.name}: {old} row(s) of an older format (random starts drawn per batch, or keyed by the "
            f"checkpoint's path) are kept in the file but not reused; those results are computed again"
        )
    return rows


def append_results(path: Path | None, rows: list[dict]) -> None:
    if path is None or not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as f:
        # after a crash mid-line, start on a fresh line so the cut line never swallows a new row
        f.write("\n" * cut + "".join(json.dumps(row) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


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

    Every image's random start comes from the protocol's seed and the image's identity, so its verdict does not
    depend on the batch, the batch size, the cascade or the number of processes. Per-image verdicts go to the
    ledger (``ledger.csv.gz`` beside ``results.jsonl``, :mod:`zsr_lab.ledger`): an attack already run on an
    image is never run on it again, so a suite whose members are recorded computes nothing (PGD-10 alone next
    to ``pgd-10+aa-10`` costs nothing), and the worst case over every attack ever run on the images is reported
    beside the suite's own.

    Arguments:
        model: a :class:`ZeroShotCLIP`.
        protocol: a :class:`~zsr_lab.protocol.Protocol`; or, as a shorthand, dataset names, with ``attacks``,
            ``eps`` and any other protocol field (``n_examples``, ``seed``, ``precision``, ``templates``,
            ``stopping``, ``cascade``) as keywords.
        attacks: suites such as ``"aa"`` (the default), ``"pgd-100"``, ``"pgd-100+cw-100+aa"`` (shorthand only).
        eps: budgets; ℓ∞ in units of 1/255 (shorthand only).
        batch_size: images per attacked batch (eval batch 256 in the protocol); changes no verdict.
        compile: run the model through ``torch.compile`` (pays on GPUs; the first batches are slower).
        out_dir: where ``results.jsonl`` and the ledger are written as each dataset finishes; verdicts found
            there (same weights, same context) are reused, not recomputed. ``None``: the ledger lives in memory
            for this call only.

    Returns:
        One row per dataset × suite × ε: model, pretrained, weights (a hash of the weights' content), dataset,
        split, split_size, template, n, clean_accuracy, robust_accuracy (the per-image worst case over the suite),
        each with its 95 % Wilson interval (``clean_low``/``clean_high``, ``robust_low``/``robust_high``);
        worst_case_accuracy (over every attack of the same norm recorded for these images: it can only go down
        as attacks are added), worst_case_members (the attacks recorded for every image) and worst_case_partial
        (attacks recorded for some of them: their breaks count too), with its interval; images (a digest of the
        images' identities) and the per-image outcomes as bitmaps (clean_outcomes, robust_outcomes,
        worst_case_outcomes: :func:`zsr_lab.uncertainty.compare` reads them); attack (the suite's label), suite,
        members (per member: its protocol, ``robust_after`` (robust accuracy after it and every member before
        it), ``robust_alone`` (its own, without the cascade) and ``iterations_per_image``), eps, eps_pixels,
        norm, precision, seed, n_examples, stopping, cascade, max_perturbation and out_of_box (over all members);
        a one-attack suite also carries that attack's steps, step_size and restarts. Only clean-correct images
        are attacked.

    Raises:
        ValueError / TypeError: bad protocol (unknown dataset, suite or member, bad ε, ``n_examples`` larger than
            a split, a member that needs more classes than a dataset has), before any attack runs.
        LedgerError: the ledger in ``out_dir`` is damaged (nothing is overwritten).
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
    ledger = Ledger(Path(out_dir) / LEDGER_FILE if out_dir is not None else None)
    done = load_results(results_path, progress=progress and rank == 0)
    check_ledger(ledger, done.values())
    weights = model.weights_fingerprint()

    target = torch.compile(model, dynamic=True) if compile else model
    table = []
    for spec in specs:
        used_templates = list(protocol.templates) if protocol.templates is not None else list(spec.templates)
        split_size = len(loaded[spec.name])
        base = {
            "format": RESULTS_FORMAT,
            "model": model.model_name,
            "pretrained": str(model.pretrained),
            "weights": weights,
            "dataset": spec.name,
            "split": spec.split,
            "split_size": split_size,
            "template": " | ".join(used_templates),
            "precision": protocol.precision,
            "seed": protocol.seed,
            "n_examples": protocol.examples_for(spec.name),
            "stopping": protocol.stopping,
            "cascade": protocol.cascade,
        }  # compile and the batch size change speed, not results: not in the key
        context = context_of(
            model.model_name, spec.split, split_size, base["template"], protocol.precision, protocol.seed
        )
        indices = subset_indices(split_size, protocol.examples_for(spec.name), protocol.seed)
        evidence = Evidence(ledger, weights, context, spec.name, indices, protocol)
        n_classes = len(spec.classnames)
        planned = [(suite, float(value)) for suite in suites for value in protocol.eps]
        pending = [(s, e) for s, e in planned if not evidence.resolved(s.members_for(n_classes), e)]
        with work("evaluating", f"robustness on {spec.name}") as timing:
            timing.cached = not pending and evidence.clean_known()
            if pending or not evidence.clean_known():
                mine = distributed.shard(indices, rank, world)
                cuda = [model.device] if model.device.type == "cuda" else []
                with torch.random.fork_rng(devices=cuda):  # attacks draw per image; the caller's RNG is left alone
                    _attack_dataset(
                        model,
                        target,
                        spec,
                        IndexedSubset(loaded[spec.name], mine),
                        used_templates,
                        pending,
                        evidence,
                        batch_size=batch_size,
                        num_workers=num_workers,
                        cache_dir=cache_dir,
                        progress=progress and rank == 0,
                    )
                if world > 1:  # every process learns the others' verdicts; the first writes them
                    for records in distributed.all_gather_objects(ledger.pending()):
                        ledger.add(records)
                if rank == 0:
                    ledger.save()
            elif progress and rank == 0:
                where = f" in {Path(out_dir).name}/{LEDGER_FILE}" if out_dir is not None else ""
                print(f"{spec.title}: every verdict already recorded{where}; nothing attacked")
        rows = [
            evidence.row({**base, **_suite_protocol(s, e, n_classes)}, s.members_for(n_classes), e) for s, e in planned
        ]
        if rank == 0:
            append_results(results_path, [r for r in rows if done.get(_row_key(r)) != r])
        done.update({_row_key(r): r for r in rows})
        table += rows
    return pd.DataFrame(table).drop(columns="format")


def stored_results(out_dir, weights: str | None = None) -> pd.DataFrame:
    """Everything an evaluation folder holds: every current-format row of its ``results.jsonl`` (for the weights
    with fingerprint ``weights``, or all), in the order first written, each with the worst case over every attack
    its ledger now records for the same images (which later evaluations may have lowered).

    Raises:
        LedgerError: the folder's ledger is damaged.
    """
    folder = Path(out_dir)
    rows = list(load_results(folder / RESULTS_FILE).values())
    ledger = Ledger(folder / LEDGER_FILE)
    check_ledger(ledger, rows)
    rows = [r for r in rows if weights is None or r["weights"] == weights]
    for row in rows:
        context = context_of(
            row["model"], row["split"], row["split_size"], row["template"], row["precision"], row["seed"]
        )
        indices = subset_indices(row["split_size"], row["n_examples"], row["seed"])
        evidence = Evidence(ledger, row["weights"], context, row["dataset"], indices, None)
        if evidence.clean_known():
            row.update(evidence.worst_case(row["norm"], row["eps"]))
    return pd.DataFrame(rows).drop(columns="format", errors="ignore")


def check_ledger(ledger: Ledger, rows) -> None:
    """Refuse a ledger that is not its folder's: ``results.jsonl`` holds results of weights the ledger (an
    existing file) knows nothing of, e.g. a ledger copied from another evaluation folder.

    Raises:
        LedgerError: naming the file, the weights and what to do; nothing is overwritten.
    """
    if ledger.path is None or not ledger.path.exists():
        return
    missing = sorted({row["weights"] for row in rows} - ledger.weights())
    if missing:
        held = ", ".join(sorted(ledger.weights())) or "no weights"
        raise LedgerError(
            f"{ledger.path} holds verdicts for {held}, but {RESULTS_FILE} beside it has results of the weights "
            f"{', '.join(missing)}: the ledger belongs to another evaluation folder. Nothing was overwritten: put "
            f"back this folder's ledger, or move this one away to evaluate again from scratch"
        )


def subset_indices(split_size: int, n_examples: int | None, seed: int = 0) -> list[int]:
    """The indices of the fixed random subset of ``n_examples`` images of a split, in increasing order (the
    whole split when ``None`` or larger)."""
    if n_examples is None or n_examples >= split_size:
        return list(range(split_size))
    if n_examples <= 0:
        raise ValueError(f"n_examples must be positive, got {n_examples}")
    order = torch.randperm(split_size, generator=torch.Generator().manual_seed(seed))
    return order[:n_examples].sort().values.tolist()


class IndexedSubset(torch.utils.data.Dataset):
    """Images of a split given by their indices, each returned with its index: ``(image, label, index)``."""

    def __init__(self, data, indices: Sequence[int]):
        self.data, self.indices = data, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        image, label = self.data[self.indices[i]]
        return image, label, self.indices[i]


def member_key(member: AttackConfig, stopping: str) -> str:
    """What a member's verdicts are recorded under: the attack and, for PGD and CW, the stopping rule."""
    ruled = member.name in ("pgd", "cw", "pgd_l2") and stopping != "any"
    return member.key + (f"{',' if ':' in member.key else ':'}stopping={stopping}" if ruled else "")


class Evidence:
    """One dataset's images under one model and context, as the ledger knows them: which verdicts are still
    missing, the seeds of the attacks that would supply them, and the result rows they add up to."""

    def __init__(self, ledger: Ledger, weights: str, context: str, dataset: str, indices: list[int], protocol):
        self.ledger, self.weights, self.context, self.dataset = ledger, weights, context, dataset
        self.indices, self.protocol = indices, protocol

    def lookup(self, key: str, eps: float, indices=None):
        """(outcome, passes, perturbation, excursion) of attack ``key`` at ``eps`` for ``indices`` (default: all of
        this dataset's images); outcome -1 where not recorded."""
        chosen = self.indices if indices is None else indices
        return self.ledger.lookup(self.weights, self.context, self.dataset, eps, key, chosen)

    def clean_known(self) -> bool:
        return bool((self.lookup(CLEAN, 0.0)[0] >= 0).all())

    def resolved(self, members, eps: float) -> bool:
        """Whether the ledger holds every verdict this suite needs on these images."""
        clean = self.lookup(CLEAN, 0.0)[0]
        if (clean < 0).any():
            return False
        robust = clean == 1
        for member in members:
            outcome = self.lookup(member_key(member, self.protocol.stopping), eps)[0]
            applies = robust if self.protocol.cascade else clean == 1
            if (outcome[applies] < 0).any():
                return False
            robust = robust & (outcome == 1)
        return True

    def seeds(self, member: AttackConfig, eps: float, indices) -> torch.Tensor:
        """Each image's seed for ``member`` at ``eps``: from the protocol's seed, the dataset, the member and the
        image's index in its split, and nothing else."""
        key = member_key(member, self.protocol.stopping)
        return torch.tensor(
            [seed_from(self.protocol.seed, self.dataset, key, float(eps), int(i)) for i in indices], dtype=torch.long
        )

    def known(self, member: AttackConfig, eps: float, indices):
        outcome, passes, _, _ = self.lookup(member_key(member, self.protocol.stopping), eps, indices)
        return torch.from_numpy(outcome), torch.from_numpy(passes)

    def record_clean(self, indices, correct) -> None:
        self.ledger.add(
            (self.weights, self.context, self.dataset, int(i), 0.0, CLEAN, int(c), 0, 0.0, 0.0, "", 0)
            for i, c in zip(indices, correct)
        )

    def record(self, suite: Suite, eps: float, indices, outcome) -> None:
        """Add the verdicts a suite's run computed (the images each member attacked)."""
        for position, member in enumerate(outcome.members, 1):
            attacked = outcome.attacked[position - 1].cpu()
            key = member_key(member, self.protocol.stopping)
            values = zip(
                indices[attacked].tolist(),
                outcome.survived[position - 1].cpu()[attacked].tolist(),
                outcome.iterations[position - 1].cpu()[attacked].tolist(),
                outcome.perturbation[position - 1].cpu()[attacked].tolist(),
                outcome.excursion[position - 1].cpu()[attacked].tolist(),
            )
            self.ledger.add(
                (self.weights, self.context, self.dataset, i, float(eps), key, int(s), p, d, x, suite.text, position)
                for i, s, p, d, x in values
            )

    def row(self, row: dict, members, eps: float) -> dict:
        """A finished result row, computed from the ledger: the suite's own worst case, each member's share, the
        worst case over everything recorded, the intervals and the per-image outcomes."""
        n = len(self.indices)
        clean = self.lookup(CLEAN, 0.0)[0] == 1
        robust = clean.copy()
        described = []
        for member, protocol_fields in zip(members, row["members"]):
            outcome, passes, perturbation, excursion = self.lookup(member_key(member, self.protocol.stopping), eps)
            applies = robust if self.protocol.cascade else clean
            survived = outcome == 1
            robust = robust & survived
            described.append(
                {
                    **protocol_fields,
                    "robust_after": 100.0 * robust.sum() / n,
                    "robust_alone": None if self.protocol.cascade else 100.0 * (clean & survived).sum() / n,
                    "iterations_per_image": float(passes[applies].sum()) / n,
                    "max_perturbation": float(perturbation[applies].max()) if applies.any() else 0.0,
                    "out_of_box": float(excursion[applies].max()) if applies.any() else 0.0,
                }
            )
        clean_low, clean_high = wilson_interval(clean.sum(), n)
        robust_low, robust_high = wilson_interval(robust.sum(), n)
        return {
            **row,
            "members": described,
            "n": n,
            "clean_accuracy": 100.0 * clean.sum() / n,
            "robust_accuracy": described[-1]["robust_after"],
            "clean_low": clean_low,
            "clean_high": clean_high,
            "robust_low": robust_low,
            "robust_high": robust_high,
            "max_perturbation": max(m["max_perturbation"] for m in described),
            "out_of_box": max(m["out_of_box"] for m in described),
            "images": images_digest(self.dataset, row["split"], row["split_size"], self.indices),
            "clean_outcomes": encode_outcomes(clean),
            "robust_outcomes": encode_outcomes(robust),
            **self.worst_case(row["norm"], eps),
        }

    def worst_case(self, norm: str, eps: float) -> dict:
        """The worst case over every attack of this norm recorded for these images (it can only go down as
        attacks are added), its interval and outcomes; the attacks that cover every image (recorded for it, or
        the image broken by another) and those that cover only some (their breaks count too)."""
        clean = self.lookup(CLEAN, 0.0)[0] == 1
        keys = [k for k in self.ledger.members(self.weights, self.context, self.dataset, eps) if _key_norm(k) == norm]
        outcomes = [self.lookup(k, eps)[0] for k in keys]
        broken = np.zeros(len(clean), dtype=bool)
        for outcome in outcomes:
            broken |= outcome == 0
        worst = clean & ~broken
        complete, partial = [], []
        for key, outcome in zip(keys, outcomes):
            covered = (outcome >= 0) | broken | ~clean
            (complete if covered.all() else partial).append(key)
        low, high = wilson_interval(worst.sum(), len(worst))
        return {
            "worst_case_accuracy": 100.0 * worst.sum() / len(worst),
            "worst_case_low": low,
            "worst_case_high": high,
            "worst_case_members": complete,
            "worst_case_partial": partial,
            "worst_case_outcomes": encode_outcomes(worst),
        }


def _key_norm(key: str) -> str:
    return ATTACKS[key.split(":")[0].rpartition("-")[0]].norm


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
    model, target, spec, data, templates, pending, evidence: Evidence, *, batch_size, num_workers, cache_dir, progress
) -> None:
    """Attack this process's images with every pending suite, recording every new verdict in the ledger; a
    member already recorded for an image (by an earlier call, or by another suite in this one) is skipped."""
    loader = _classifier_and_loader(
        model, spec, data, templates, batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir
    )
    n_classes = model.class_embeddings.shape[0]
    device = model.device
    protocol = evidence.protocol
    model.eval()
    with frozen_parameters(model):
        for images, labels, indices in progress_bar(loader, desc=spec.title, disable=not progress, leave=False):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.no_grad(), autocast(protocol.precision, device):
                correct = target(images).argmax(1) == labels
            evidence.record_clean(indices.tolist(), correct.tolist())
            chosen = indices[correct.cpu()]
            x, y = images[correct], labels[correct]
            if len(y) == 0:
                continue
            for suite, eps in pending:
                outcome = run_suite(
                    target,
                    suite.members_for(n_classes),
                    x,
                    y,
                    eps,
                    n_classes=n_classes,
                    precision=protocol.precision,
                    stopping=protocol.stopping,
                    cascade=protocol.cascade,
                    seeds=lambda m: evidence.seeds(m, eps, chosen.tolist()),  # noqa: B023
                    known=lambda m: evidence.known(m, eps, chosen.tolist()),  # noqa: B023
                )
                evidence.record(suite, eps, chosen, outcome)


def write_results_csv(table: pd.DataFrame, path) -> Path:
    """Write an evaluation table as CSV, each row's suite members as JSON (what
    :func:`zsr_lab.reported.load_run_results` reads back)."""
    path = Path(path)
    table = table.copy()
    for column in LIST_COLUMNS:
        if column in table.columns:
            table[column] = [json.dumps(m) if isinstance(m, list) else m for m in table[column]]
    table.to_csv(path, index=False)
    return path


LIST_COLUMNS = ("members", "worst_case_members", "worst_case_partial")  # JSON in results.csv
TEXT_COLUMNS = ("weights", "images", "clean_outcomes", "robust_outcomes", "worst_case_outcomes")  # hex: never numbers


def read_results_csv(path) -> pd.DataFrame:
    """A ``results.csv`` (:func:`write_results_csv`) read back: list columns parsed, hex columns kept as text."""
    table = pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str))
    for column in LIST_COLUMNS:
        if column in table.columns:
            table[column] = [json.loads(m) if isinstance(m, str) else m for m in table[column]]
    return table


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


def _scale_defaults() -> str:
    lines = []
    for name in ("classroom", "scenes", "full"):
        setup = get_scale(name)
        lines.append(
            f"  {name}: {setup.model_name} ({setup.pretrained}); datasets {', '.join(setup.eval_datasets)}; "
            f"{setup.protocol.describe()}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zsr_lab.evaluate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Zero-shot robustness of a CLIP model: datasets × attack suites × ε → results.jsonl, a per-image "
        "ledger and results.csv; robust accuracy is the per-image worst case over each suite, every accuracy with "
        "its 95 % interval. Attacks already recorded in --out for the same weights and images are not run again.\n\n"
        "What each --scale sets unless an option below overrides it:\n" + _scale_defaults(),
        epilog="datasets: " + ", ".join(datasets.list_datasets()) + "\n\nexample: python -m zsr_lab.evaluate --scale "
        "full --data-root /data --attacks aa pgd-100 --eps 1 2 4 --n-examples 1000 --out runs/clip_eval",
    )
    parser.add_argument(
        "--scale",
        choices=["classroom", "scenes", "full"],
        default="classroom",
        help="model, dataset and protocol defaults, listed above (default: classroom)",
    )
    parser.add_argument("--model", help="open_clip architecture (default: the --scale's model, listed above)")
    parser.add_argument(
        "--pretrained", help="pretrained tag or checkpoint file (default: the --scale's weights, listed above)"
    )
    parser.add_argument(
        "--datasets", nargs="+", help="registry names, listed below (default: the --scale's evaluation sets)"
    )
    parser.add_argument(
        "--attacks",
        nargs="+",
        help="suites, each evaluated separately: aa, aa-standard, papers-aa, pgd-100, pgd-100+cw-100+aa, ... "
        "(default: the --scale's, listed above)",
    )
    parser.add_argument(
        "--eps", nargs="+", type=float, help="ℓ∞ budgets in units of 1/255 (default: the --scale's, listed above)"
    )
    parser.add_argument(
        "--n-examples",
        type=int,
        help="images per dataset, drawn with --seed (default: the --scale's, listed above; 0: the whole split)",
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
    parser.add_argument(
        "--batch-size", type=int, default=256, help="images per attacked batch; changes no verdict (default: 256)"
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="forward passes of the clean pass and the attacks; part of the protocol (default: fp32)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (pays on GPUs)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="draws the images of each dataset and every image's attack randomness; part of the protocol (default: 0)",
    )
    parser.add_argument("--data-root", help="folder holding the datasets (default: $ZSR_LAB_DATA)")
    parser.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    parser.add_argument(
        "--out",
        required=True,
        help="evaluation folder: results.jsonl and the ledger are written and resumed here; results.csv, when "
        "every dataset is done, holds every result the folder has for these weights",
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
    columns = ["dataset", "attack", "eps", "n", "clean_accuracy", "robust_accuracy", "robust_low", "robust_high"]
    columns += ["worst_case_accuracy"]
    if is_main:
        label = args.label or Path(str(args.pretrained or setup.pretrained)).stem
        table.insert(0, "method", label)
        # the folder's table: every result it holds for these weights, earlier commands' suites included
        everything = stored_results(args.out, table["weights"].iloc[0])
        everything.insert(0, "method", label)
        write_results_csv(with_mean(everything), Path(args.out) / "results.csv")
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
