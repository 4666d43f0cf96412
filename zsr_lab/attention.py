"""Text-guided attention maps of CLIP's image tower (TGA-ZSR, Comp-TGA).

The map of an image for a class text embedding ``t`` is computed from all last-layer tokens of the image tower,
projected into the joint space (:meth:`ZeroShotCLIP.encode_image_tokens`, ``[B, 1 + P, d]``):

1. L2-normalise the tokens. The official code normalises over the **token axis** (per channel, across the CLS
   token and all patches); that is the faithful default, ``normalize="tokens"``. ``normalize="per_token"``
   normalises each token's vector instead (a cosine similarity per patch).
2. ``a = patches · t`` → ``[B, P]``, min-max normalised per image over the P patches.
3. Reshape to the √P × √P patch grid, upsample bilinearly (``align_corners=False``) to the input size, flatten.

The complementary map of Comp-TGA is ``A_c ⊙ (1 − A_n)``: the class map times one minus the map of the
non-class prompt "This is not a photo of a {}" (no renormalisation after the product).

For looking at maps rather than training on them: :func:`attention_maps` (a model, images and text embeddings →
``[B, H, W]`` maps), :func:`attention_drift` (how far a map moved, root-mean-square per pixel) and
:func:`measure_attention_drift` (how far attacks move each model's maps on whole datasets), and where a dataset
knows where its objects are, :func:`attention_mass_in_object`, :func:`pointing_game` and
:func:`measure_attention_localisation` (how much of the map falls on the object, clean, under noise and under
attack).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import datasets
from .attacks import check_eps, pgd_linf
from .classifier import dataset_classifier, zero_shot_classifier
from .evaluate import _frozen, subset
from .models import ZeroShotCLIP

NORMALIZATIONS = ("tokens", "per_token")
NON_CLASS_TEMPLATE = "This is not a photo of a {}"
MAP_KINDS = ("class", "non_class", "complementary")


def text_guided_attention(tokens: torch.Tensor, text: torch.Tensor, *, image_size: tuple[int, int] | int,
                          normalize: str = "tokens") -> torch.Tensor:
    """Text-guided attention maps, one per image, flattened.

    Arguments:
        tokens: projected last-layer tokens, CLS first, ``[B, 1 + P, d]`` with P a square (7×7 for ViT-B/32 at 224).
        text: one L2-normalised text embedding per image (usually its class's), ``[B, d]``.
        image_size: the size to upsample to (the model's input size).
        normalize: ``"tokens"`` (faithful: over the token axis) or ``"per_token"``.

    Shape:
        - output: ``[B, H·W]`` with values in [0, 1] (each map's patch minimum is 0 and maximum 1).
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be 'tokens' (the official computation) or 'per_token', got {normalize!r}")
    patches = tokens.shape[1] - 1
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError(f"expected a square patch grid after the CLS token, got {patches} patch tokens")
    tokens = F.normalize(tokens, dim=1 if normalize == "tokens" else -1)
    scores = torch.einsum("bpd,bd->bp", tokens[:, 1:], text.to(tokens.dtype))
    low, high = scores.amin(dim=1, keepdim=True), scores.amax(dim=1, keepdim=True)
    scores = (scores - low) / (high - low).clamp_min(1e-12)  # a constant map stays 0 instead of NaN
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    maps = F.interpolate(scores.view(-1, 1, side, side), size=size, mode="bilinear", align_corners=False)
    return maps.flatten(1)


def complementary_attention(class_map: torch.Tensor, non_class_map: torch.Tensor) -> torch.Tensor:
    """Comp-TGA's map ``A_c ⊙ (1 − A_n)``, not renormalised."""
    return class_map * (1 - non_class_map)


def attention_distance(maps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the plain (not squared) L2 distance over all map values (LARM and GACM)."""
    return (maps - target).norm(dim=1).mean()


def non_class_classifier(model: ZeroShotCLIP, classnames: Sequence[str]) -> torch.Tensor:
    """Embeddings of the non-class prompts "This is not a photo of a {}", ``[C, d]`` (Comp-TGA's ``A_n``)."""
    return zero_shot_classifier(model, classnames, [NON_CLASS_TEMPLATE])


@torch.no_grad()
def attention_maps(model: ZeroShotCLIP, images: torch.Tensor, text: torch.Tensor, *,
                   non_class_text: torch.Tensor | None = None, normalize: str = "tokens") -> torch.Tensor:
    """Text-guided attention maps of ``images`` for inspection (no gradient, model in eval mode).

    Arguments:
        model: the model whose image tower is looked at.
        images: [0,1] images, ``[B, C, h, w]``.
        text: one text embedding per image ``[B, d]`` (e.g. ``model.class_embeddings[labels]``), or one ``[d]``
            for all.
        non_class_text: when given (same shapes as ``text``), the complementary map ``A_c ⊙ (1 − A_n)``.
        normalize: as in :func:`text_guided_attention`.

    Shape:
        - output: ``[B, H, W]`` at the model's input size, on the CPU, values in [0, 1].
    """
    def expand(embedding: torch.Tensor) -> torch.Tensor:
        return embedding.to(model.device).float().expand(len(images), -1)

    was_training = model.training
    model.eval()
    tokens = model.encode_image_tokens(images.to(model.device)).tokens.float()
    maps = text_guided_attention(tokens, expand(text), image_size=model.image_size, normalize=normalize)
    if non_class_text is not None:
        non_class = text_guided_attention(tokens, expand(non_class_text), image_size=model.image_size,
                                          normalize=normalize)
        maps = complementary_attention(maps, non_class)
    model.train(was_training)
    return maps.view(len(images), *model.image_size).cpu()


def attention_drift(maps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Root-mean-square difference per pixel between two sets of maps, one value per image, in [0, 1].

    ``attention_distance`` (LARM/GACM) is the batch mean of ``√(H·W) · drift``: the drift is the same
    distance, independent of the map size, so classroom and full-scale maps can be compared.
    """
    return (maps - target).flatten(1).pow(2).mean(dim=1).sqrt()


def attention_mass_in_object(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The share of each map's mass that falls on the object, one value per image, in [0, 1].

    A map spread evenly over the image scores the object's share of the image area (its ``masks`` mean): that
    is the chance level to read it against. A map whose mass is all zero scores that chance level too.

    Arguments:
        maps: attention maps ``[B, H, W]`` (non-negative, e.g. from :func:`attention_maps`).
        masks: the objects' masks at the same size, ``[B, H, W]``, 1 on the object (fractional values at resized
            edges count fractionally).
    """
    maps, masks = maps.flatten(1).float(), masks.flatten(1).float().to(maps.device)
    total = maps.sum(1)
    share = (maps * masks).sum(1) / total.clamp_min(1e-12)
    return torch.where(total > 0, share, masks.mean(1))


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Whether each map's maximum falls on the object (the pointing game), one bool per image.

    Ties (several pixels at the maximum, as a bilinearly upsampled patch peak has) count as a hit when the
    first of them in reading order is on the object. Shapes as in :func:`attention_mass_in_object`.
    """
    peak = maps.flatten(1).argmax(1)
    return masks.flatten(1).to(maps.device).gather(1, peak[:, None]).squeeze(1) >= 0.5


def perturbed_images(model: ZeroShotCLIP, images: torch.Tensor, labels: torch.Tensor, *, eps: float = 4,
                     steps: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
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
    with _frozen(model):
        adversarial = pgd_linf(lambda x: F.cross_entropy(model(x), labels), images, eps=eps / 255,
                               step_size=eps / 4 / 255, steps=steps, start=start)
    noisy = (images + eps / 255 * signs).clamp(0, 1)
    return {"clean": images, "random_noise": noisy, "adversarial": adversarial}


def _perturbed_batches(model: ZeroShotCLIP, loader: DataLoader, *, eps: float, steps: int, seed: int):
    """Per batch of ``loader``: ``(images, labels, perturbed_images(...))``, seeded per batch."""
    for batch, (images, labels) in enumerate(loader):
        images, labels = images.to(model.device), labels.to(model.device)
        yield images, labels, perturbed_images(model, images, labels, eps=eps, steps=steps,
                                               seed=seed * 100_003 + batch)


def measure_attention_drift(models: Mapping[str, ZeroShotCLIP], dataset_names: Sequence[str], *,
                            reference: ZeroShotCLIP, eps: float = 4, steps: int = 10, n_examples: int | None = 200,
                            batch_size: int = 100, data_root=None, seed: int = 0) -> pd.DataFrame:
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
    for name in dataset_names:
        spec = datasets.get_spec(name)
        data = datasets.load_dataset(name, data_root=data_root, image_size=reference.image_size[0], verbose=False)
        loader = DataLoader(subset(data, n_examples, seed), batch_size=batch_size)
        reference.set_classifier(dataset_classifier(reference, name))
        for model_name, model in models.items():
            model.set_classifier(dataset_classifier(model, name))
            sums = {"clean": 0.0, "random_noise": 0.0, "adversarial": 0.0}
            count = 0
            for images, labels, conditions in _perturbed_batches(model, loader, eps=eps, steps=steps, seed=seed):
                target = attention_maps(reference, images, reference.class_embeddings[labels])
                text = model.class_embeddings[labels]
                for key, x in conditions.items():
                    sums[key] += float(attention_drift(attention_maps(model, x, text), target).sum())
                count += len(labels)
            rows.append({"model": model_name, "dataset": spec.name, "eps": float(eps), "steps": steps, "n": count,
                         **{key: value / count for key, value in sums.items()}})
    for model in (reference, *models.values()):
        model.class_embeddings = installed[id(model)]
    return pd.DataFrame(rows)


def measure_attention_localisation(models: Mapping[str, ZeroShotCLIP], dataset_names: Sequence[str], *,
                                   eps: float = 4, steps: int = 10, n_examples: int | None = 200,
                                   batch_size: int = 100, normalize: str = "tokens", data_root=None,
                                   seed: int = 0) -> pd.DataFrame:
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
        raise ValueError(f"{', '.join(missing)}: no object regions (the dataset does not say where its objects are), "
                         f"so attention cannot be scored against them. Datasets with object regions: "
                         f"{', '.join(with_regions)}. Use measure_attention_drift for the others.")
    sizes = {tuple(m.image_size) for m in models.values()}
    if len(sizes) != 1:
        raise ValueError(f"all models must share one input size to be scored on the same masks, got {sorted(sizes)}")
    size = next(iter(sizes))[0]
    installed = {id(m): m.class_embeddings for m in models.values()}  # restored at the end
    rows = []
    for name in dataset_names:
        data = subset(datasets.load_dataset(name, data_root=data_root, image_size=size, verbose=False),
                      n_examples, seed)
        masks = datasets.object_masks(data, size)
        loader = DataLoader(data, batch_size=batch_size)
        for model_name, model in models.items():
            model.set_classifier(dataset_classifier(model, name))
            sums = {key: {"mass_in_object": 0.0, "pointing": 0.0, "accuracy": 0.0}
                    for key in ("clean", "random_noise", "adversarial")}
            count = 0
            for images, labels, conditions in _perturbed_batches(model, loader, eps=eps, steps=steps, seed=seed):
                mask = masks[count:count + len(labels)]
                text = model.class_embeddings[labels]
                for key, x in conditions.items():
                    maps = attention_maps(model, x, text, normalize=normalize)
                    sums[key]["mass_in_object"] += float(attention_mass_in_object(maps, mask).sum())
                    sums[key]["pointing"] += float(pointing_game(maps, mask).sum())
                    with torch.no_grad():
                        sums[key]["accuracy"] += float((model(x).argmax(1) == labels).sum())
                count += len(labels)
            uniform = float(masks.flatten(1).mean(1).mean())
            for key, values in sums.items():
                mass = values["mass_in_object"] / count
                rows.append({"model": model_name, "dataset": name, "condition": key, "mass_in_object": mass,
                             "uniform": uniform, "lift": mass / uniform, "pointing": values["pointing"] / count,
                             "accuracy": 100 * values["accuracy"] / count, "eps": float(eps), "steps": steps,
                             "n": count})
    for model in models.values():
        model.class_embeddings = installed[id(model)]
    return pd.DataFrame(rows)
