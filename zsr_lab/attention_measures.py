"""Where models look, measured on whole datasets: how far attacks move the text-guided attention maps
(:func:`measure_attention_drift`) and how much of the map falls on the object where a dataset knows where its
objects are (:func:`measure_attention_localisation`), each clean, under random noise of the same budget and under
the model's own PGD (:func:`perturbed_images`).

The maps and the per-image scores are :mod:`zsr_lab.attention`'s; this module adds the data, the perturbations and
the tables (:func:`localisation_table` lays the localisation scores out for reading).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import datasets
from .attacks import check_eps, pgd_linf
from .attention import attention_drift, attention_maps, attention_mass_in_object, pointing_game
from .classifier import dataset_classifier
from .evaluate import subset
from .memo import remember
from .models import ZeroShotCLIP, frozen_parameters
from .worklog import work


def perturbed_images(
    model: ZeroShotCLIP, images: torch.Tensor, labels: torch.Tensor, *, eps: float = 4, steps: int = 10, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The three views the attention measures compare: ``{"clean", "random_noise", "adversarial"}`` → images.

    The noise is random ±ε signs; the attack is the model's own PGD on the cross-entropy of the true class
    (``steps`` sign steps of ε/4, random start), against the classifier installed on the model. Both are drawn
    from ``seed``, so every model sees the same noise and the same starting points.

    Arguments:
        images: [0,1] images ``[B, C, H, W]`` on the model's device; labels: ``[B]``.
        eps: ℓ∞ budget in units of 1/255.
    """
    generator = torch.Generator().manual_seed(seed)
    start = torch.rand(images.shape, generator=generator).to(images.device)
    signs = torch.randint(0, 2, images.shape, generator=generator).to(images.device) * 2 - 1
    with frozen_parameters(model):
        adversarial = pgd_linf(
            lambda x: F.cross_entropy(model(x), labels),
            images,
            eps=eps / 255,
            step_size=eps / 4 / 255,
            steps=steps,
            start=start,
        )
    noisy = (images + eps / 255 * signs).clamp(0, 1)
    return {"clean": images, "random_noise": noisy, "adversarial": adversarial}


def _perturbed_batches(model: ZeroShotCLIP, loader: DataLoader, *, eps: float, steps: int, seed: int):
    """Per batch of ``loader``: ``(images, labels, perturbed_images(...))``, seeded per batch."""
    for batch, (images, labels) in enumerate(loader):
        images, labels = images.to(model.device), labels.to(model.device)
        yield images, labels, perturbed_images(model, images, labels, eps=eps, steps=steps, seed=seed * 100_003 + batch)


def measure_attention_drift(
    models: Mapping[str, ZeroShotCLIP],
    dataset_names: Sequence[str],
    *,
    reference: ZeroShotCLIP,
    eps: float = 4,
    steps: int = 10,
    n_examples: int | None = 200,
    batch_size: int = 100,
    data_root=None,
    seed: int = 0,
) -> pd.DataFrame:
    """How far each model's class attention moves away from the reference model's clean attention.

    For every image ``x`` of class ``y`` the target is the reference (pre-trained) model's map ``A_0(x)`` for
    ``y``. Each model's maps are compared with it on the clean image (GACM's quantity), on the image under
    random ±ε sign noise (a control: a perturbation of the same size that is not an attack) and on its own
    PGD image (LARM's quantity; CE of the true class, ``steps`` sign steps of ε/4, random start).

    Arguments:
        models: name → model (e.g. the pre-trained CLIP, TeCoA, TGA-ZSR).
        dataset_names: registry names (the held-out sets).
        reference: the model whose clean maps are the target (usually the pre-trained CLIP).
        eps: ℓ∞ budget in units of 1/255.
        n_examples: a fixed random subset per dataset (``None``: the whole split).

    Returns:
        One row per model × dataset: ``clean``, ``random_noise``, ``adversarial`` (mean drift, see
        :func:`attention_drift`) plus ``model``, ``dataset``, ``eps``, ``steps``, ``n``. The models' installed
        classifiers are left as they were.
    """
    check_eps(eps)
    installed = {id(m): m.class_embeddings for m in (reference, *models.values())}  # restored at the end
    rows = []
    settings = dict(eps=float(eps), steps=steps, n_examples=n_examples, batch_size=batch_size, seed=seed)
    with work("measuring", "attention drift") as record:
        record.cached = True
        for name in dataset_names:
            spec = datasets.get_spec(name)
            data = datasets.load_dataset(name, data_root=data_root, image_size=reference.image_size[0], verbose=False)
            loader = DataLoader(subset(data, n_examples, seed), batch_size=batch_size)
            reference.set_classifier(dataset_classifier(reference, name))
            for model_name, model in models.items():
                # per model and dataset: a model measured again (in another cell or chapter) is read
                key = dict(model=model.weights_fingerprint(), reference=reference.weights_fingerprint(), **settings)
                key.update(
                    dataset=name, split_size=len(data), size=model.image_size
                )  # the data, as the ledger names it
                drift = partial(_drift, model, reference, name, loader, eps=eps, steps=steps, seed=seed)
                means, cached = remember("attention_drift", key, drift)
                record.cached &= cached
                rows.append({"model": model_name, "dataset": spec.name, "eps": float(eps), "steps": steps, **means})
    for model in (reference, *models.values()):
        model.class_embeddings = installed[id(model)]
    return pd.DataFrame(rows)


def _drift(
    model: ZeroShotCLIP, reference: ZeroShotCLIP, dataset: str, loader: DataLoader, *, eps: float, steps: int, seed: int
) -> dict:
    """``n`` and the mean drift from the reference's clean maps under each condition, for one model and dataset
    (the reference's classifier for ``dataset`` installed)."""
    model.set_classifier(dataset_classifier(model, dataset))
    sums = {"clean": 0.0, "random_noise": 0.0, "adversarial": 0.0}
    count = 0
    for images, labels, conditions in _perturbed_batches(model, loader, eps=eps, steps=steps, seed=seed):
        target = attention_maps(reference, images, reference.class_embeddings[labels])
        text = model.class_embeddings[labels]
        for key, x in conditions.items():
            sums[key] += float(attention_drift(attention_maps(model, x, text), target).sum())
        count += len(labels)
    return {"n": count, **{key: value / count for key, value in sums.items()}}


def measure_attention_localisation(
    models: Mapping[str, ZeroShotCLIP],
    dataset_names: Sequence[str],
    *,
    eps: float = 4,
    steps: int = 10,
    n_examples: int | None = 200,
    batch_size: int = 100,
    normalize: str = "tokens",
    data_root=None,
    seed: int = 0,
) -> pd.DataFrame:
    """How much of each model's class attention falls on the object, clean, under noise and under attack.

    For every image ``x`` of class ``y`` with a known object region, the model's map for ``y`` (as TGA-ZSR
    computes it) is scored by :func:`attention_mass_in_object` and :func:`pointing_game` on the clean image, on
    the image under random ±ε sign noise (a perturbation of the same size that is not an attack) and on the
    model's own PGD image (as in :func:`measure_attention_drift`: same noise, same starting points).

    Arguments:
        models: name → model (e.g. the pre-trained CLIP, TeCoA, TGA-ZSR).
        dataset_names: registry names of datasets with object regions (:func:`zsr_lab.datasets.has_object_regions`;
            the classroom's scenes, and at full scale those whose annotations give one); a dataset without
            regions raises ``ValueError`` saying which have them.
        eps: ℓ∞ budget in units of 1/255.
        n_examples: a fixed random subset per dataset (``None``: the whole split).
        normalize: the maps' normalisation, as in :func:`text_guided_attention`.

    Returns:
        One row per model × dataset × condition (``clean``, ``random_noise``, ``adversarial``):
        ``mass_in_object`` (mean share of the map's mass on the object), ``uniform`` (the share a uniform map
        would get: the mean object area; the chance level), ``lift`` (``mass_in_object / uniform``),
        ``pointing`` (share of maps whose maximum is on the object), ``accuracy`` (top-1 on those images, %),
        plus ``model``, ``dataset``, ``eps``, ``steps``, ``n``. The models' installed classifiers are left as
        they were.
    """
    check_eps(eps)
    missing = [name for name in dataset_names if not datasets.has_object_regions(name)]
    if missing:
        with_regions = [name for name in datasets.list_datasets() if datasets.has_object_regions(name)]
        raise ValueError(
            f"{', '.join(missing)}: no object regions (the dataset does not say where its objects are), "
            f"so attention cannot be scored against them. Datasets with object regions: "
            f"{', '.join(with_regions)}. Use measure_attention_drift for the others."
        )
    sizes = {tuple(m.image_size) for m in models.values()}
    if len(sizes) != 1:
        raise ValueError(f"all models must share one input size to be scored on the same masks, got {sorted(sizes)}")
    size = next(iter(sizes))[0]
    installed = {id(m): m.class_embeddings for m in models.values()}  # restored at the end
    rows = []
    settings = dict(
        eps=float(eps), steps=steps, n_examples=n_examples, batch_size=batch_size, normalize=normalize, seed=seed
    )
    with work("measuring", "attention localisation") as record:
        record.cached = True
        for name in dataset_names:
            data = subset(
                datasets.load_dataset(name, data_root=data_root, image_size=size, verbose=False), n_examples, seed
            )
            masks = datasets.object_masks(data, size)
            loader = DataLoader(data, batch_size=batch_size)
            for model_name, model in models.items():
                # per model and dataset: a model measured again (in another cell or chapter) is read
                # the data: its name and the object regions of the images measured (their content)
                key = dict(model=model.weights_fingerprint(), dataset=name, masks=masks, size=size, **settings)
                localise = partial(
                    _localisation, model, name, loader, masks, eps=eps, steps=steps, normalize=normalize, seed=seed
                )
                scores, cached = remember("attention_localisation", key, localise)
                record.cached &= cached
                for score in scores:
                    n = score.pop("n")
                    rows.append(
                        {"model": model_name, "dataset": name, **score, "eps": float(eps), "steps": steps, "n": n}
                    )
    for model in models.values():
        model.class_embeddings = installed[id(model)]
    return pd.DataFrame(rows)


def _localisation(
    model: ZeroShotCLIP,
    dataset: str,
    loader: DataLoader,
    masks: torch.Tensor,
    *,
    eps: float,
    steps: int,
    normalize: str,
    seed: int,
) -> list[dict]:
    """Per condition, the localisation scores of one model on one dataset (without model and dataset)."""
    model.set_classifier(dataset_classifier(model, dataset))
    sums = {
        key: {"mass_in_object": 0.0, "pointing": 0.0, "accuracy": 0.0}
        for key in ("clean", "random_noise", "adversarial")
    }
    count = 0
    for _, labels, conditions in _perturbed_batches(model, loader, eps=eps, steps=steps, seed=seed):
        mask = masks[count : count + len(labels)]
        text = model.class_embeddings[labels]
        for key, x in conditions.items():
            maps = attention_maps(model, x, text, normalize=normalize)
            sums[key]["mass_in_object"] += float(attention_mass_in_object(maps, mask).sum())
            sums[key]["pointing"] += float(pointing_game(maps, mask).sum())
            with torch.no_grad():
                sums[key]["accuracy"] += float((model(x).argmax(1) == labels).sum())
        count += len(labels)
    uniform = float(masks.flatten(1).mean(1).mean())
    scores = []
    for key, values in sums.items():
        mass = values["mass_in_object"] / count
        scores.append(
            {
                "condition": key,
                "mass_in_object": mass,
                "uniform": uniform,
                "lift": mass / uniform,
                "pointing": values["pointing"] / count,
                "accuracy": 100 * values["accuracy"] / count,
                "n": count,
            }
        )
    return scores


CONDITION_NAMES = {"clean": "clean", "random_noise": "noise", "adversarial": "attacked"}


def localisation_table(scores: pd.DataFrame) -> pd.DataFrame:
    """A :func:`measure_attention_localisation` table as a reader compares it: per dataset and model, the lift (two
    decimals) and the accuracy in % (one decimal, as the book's sentences give it) on clean, noisy and attacked
    images, under short column names so that the table fits a page's column."""
    named = scores.assign(condition=scores["condition"].map(CONDITION_NAMES))
    parts = []
    for value, label, decimals in (("lift", "lift", 2), ("accuracy", "accuracy (%)", 1)):
        part = named.pivot_table(index=["dataset", "model"], columns="condition", values=value, sort=False)
        part.columns = pd.MultiIndex.from_product([[label], part.columns])
        parts.append(part.round(decimals))
    return pd.concat(parts, axis=1)
