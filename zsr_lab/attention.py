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
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NORMALIZATIONS = ("tokens", "per_token")
NON_CLASS_TEMPLATE = "This is not a photo of a {}"


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
