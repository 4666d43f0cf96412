"""Clean zero-shot evaluation of any model on any registered dataset, at either scale."""
from __future__ import annotations

import contextlib
import os
from typing import Sequence

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from . import datasets
from .classifier import dataset_classifier
from .models import ZeroShotCLIP


def subset(dataset, n_examples: int | None, seed: int = 0):
    """A fixed random subset of ``n_examples`` (the whole dataset when ``None`` or larger)."""
    if n_examples is None or n_examples >= len(dataset):
        return dataset
    if n_examples <= 0:
        raise ValueError(f"n_examples must be positive, got {n_examples}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:n_examples].sort().values.tolist())


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device):
    """A context that runs the forward pass in ``precision`` (``"fp32"``, ``"bf16"`` or ``"fp16"``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


@torch.no_grad()
def zero_shot_accuracy(model: ZeroShotCLIP, loader: DataLoader, *, precision: str = "fp32", desc: str = "",
                       progress: bool = True) -> tuple[int, int]:
    """(correct, total) of the model's current classifier over a loader of [0,1] images."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=model.device)
    total = 0
    for images, labels in tqdm(loader, desc=desc, disable=not progress, leave=False):
        images, labels = images.to(model.device, non_blocking=True), labels.to(model.device, non_blocking=True)
        with autocast(precision, model.device):
            logits = model(images)
        correct += (logits.argmax(dim=1) == labels).sum()  # stays on the device: no host sync per batch
        total += labels.numel()
    return int(correct), total


def evaluate_zero_shot(model: ZeroShotCLIP, dataset_names: Sequence[str], *, data_root=None,
                       batch_size: int = 256, n_examples: int | None = None, seed: int = 0,
                       precision: str = "fp32", templates: Sequence[str] | None = None, num_workers: int | None = None,
                       download: bool = False, cache_dir=None, progress: bool = True) -> pd.DataFrame:
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
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if model.device.type == "cuda" else 0
    rows = []
    for name in dataset_names:
        spec = datasets.get_spec(name)
        data = datasets.load_dataset(name, data_root=data_root, image_size=model.image_size[0],
                                     download=download, verbose=progress)
        data = subset(data, n_examples, seed)
        used_templates = list(templates) if templates is not None else list(spec.templates)
        model.set_classifier(dataset_classifier(model, name, templates=used_templates, cache_dir=cache_dir))
        loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers,
                            pin_memory=model.device.type == "cuda")
        correct, total = zero_shot_accuracy(model, loader, precision=precision, desc=spec.title,
                                            progress=progress)
        rows.append({"model": model.model_name, "pretrained": str(model.pretrained), "dataset": name,
                     "split": spec.split, "template": " | ".join(used_templates), "n": total,
                     "accuracy": 100.0 * correct / total, "attack": "none", "precision": precision,
                     "seed": seed})
    return pd.DataFrame(rows)


def with_mean(table: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """Append the plain mean over datasets as a final row (the protocol's headline number)."""
    mean = {column: "" for column in table.columns}
    mean.update({"dataset": "mean", value: table[value].mean(), "n": int(table["n"].sum())})
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)
