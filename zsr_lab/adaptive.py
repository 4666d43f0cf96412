"""Adaptive attacks: what breaks a defence that hides the gradient (Athalye et al., 2018; Tramèr et al., 2020).

- :func:`bpda`: Backward Pass Differentiable Approximation — run the defence's non-differentiable transform
  forward, differentiate through the identity.
- :func:`eot`: Expectation over Transformation — the gradient of the mean loss over many draws of a randomised
  defence, and no early stop on one lucky draw.
- :func:`margin`: PGD on a margin loss of the logits, which does not saturate where the cross-entropy does.

Each is ℓ∞ PGD (:func:`zsr_lab.attacks.pgd_linf`) with a uniform random start, on images in [0, 1], with ε in
units of 1/255 and steps of ε/4, and returns the adversarial images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .attacks import check_eps, margin_loss, pgd_linf


def _pgd(objective, images: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    check_eps(eps)
    return pgd_linf(
        objective, images, eps=eps / 255, step_size=eps / 4 / 255, steps=steps, start=torch.rand_like(images)
    )


def bpda(
    model,
    transform: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    steps: int = 20,
) -> torch.Tensor:
    """PGD on ``CE(model(x + (transform(x) − x).detach()))``: the forward pass sees the transformed images, the
    backward pass treats the transform as the identity.

    Arguments:
        model: the classifier behind the transform (logits from [0, 1] images).
        transform: the defence's input transform, e.g. bit-depth reduction.
        eps: ℓ∞ budget in units of 1/255; steps: PGD steps of ε/4.

    Shape:
        - images, output: :math:`(N, C, H, W)`; labels: :math:`(N)`.

    Examples::
        >>> defended = zl.defences.BitDepthReduction(clip, bits=5)
        >>> adversarial = zl.adaptive.bpda(defended.model, defended.transform, images, labels, eps=8)
    """

    def objective(adv):
        return F.cross_entropy(model(adv + (transform(adv) - adv).detach()), labels, reduction="sum")

    return _pgd(objective, images, eps, steps)


def eot(
    model, images: torch.Tensor, labels: torch.Tensor, *, eps: float, draws: int = 8, steps: int = 20
) -> torch.Tensor:
    """PGD on the cross-entropy summed over ``draws`` calls of a randomised ``model`` per step (each call draws
    its own randomness), for all ``steps`` steps: no image stops at the first draw it fools.

    Arguments:
        model: a randomised classifier (e.g. a defence that adds noise or optimises its input from a random start).
        eps: ℓ∞ budget in units of 1/255; draws: calls averaged per step; steps: PGD steps of ε/4.

    Examples::
        >>> adversarial = zl.adaptive.eot(zl.defences.RandomNoise(clip), images, labels, eps=8)
    """

    def objective(adv):
        return sum(F.cross_entropy(model(adv), labels, reduction="sum") for _ in range(draws))

    return _pgd(objective, images, eps, steps)


def margin(
    model, images: torch.Tensor, labels: torch.Tensor, *, eps: float, steps: int = 20, kappa: float = 50.0
) -> torch.Tensor:
    """PGD on the margin loss ``−relu(z_y − max_{k≠y} z_k + κ)`` of the logits: its gradient does not vanish
    when the softmax saturates.

    Examples::
        >>> adversarial = zl.adaptive.margin(zl.defences.SaturatedLogits(clip), images, labels, eps=8)
    """
    return _pgd(lambda adv: margin_loss(model(adv), labels, kappa).sum(), images, eps, steps)
