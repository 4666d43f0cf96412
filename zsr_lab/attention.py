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
``[B, H, W]`` maps), :func:`attention_drift` (how far a map moved, root-mean-square per pixel), and where a dataset
knows where its objects are, :func:`attention_mass_in_object` and :func:`pointing_game`. Measuring them on whole
datasets, clean, under noise and under attack, is :mod:`zsr_lab.attention_measures`' job: this module is what the
losses need and imports no engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .classifier import zero_shot_classifier
from .models import ZeroShotCLIP

NORMALIZATIONS = ("tokens", "per_token")
NON_CLASS_TEMPLATE = "This is not a photo of a {}"
MAP_KINDS = ("class", "non_class", "complementary")


def text_guided_attention(
    tokens: torch.Tensor, text: torch.Tensor, *, image_size: tuple[int, int] | int, normalize: str = "tokens"
) -> torch.Tensor:
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
def attention_maps(
    model: ZeroShotCLIP,
    images: torch.Tensor,
    text: torch.Tensor,
    *,
    non_class_text: torch.Tensor | None = None,
    normalize: str = "tokens",
) -> torch.Tensor:
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
        non_class = text_guided_attention(
            tokens, expand(non_class_text), image_size=model.image_size, normalize=normalize
        )
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
