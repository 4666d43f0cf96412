"""Defences that look robust and are not: inference-time wrappers around a :class:`ZeroShotCLIP` for the chapter
"Evaluations that lie".

Each wraps any zero-shot CLIP (classroom or full scale) and is called like it — ``[0,1]`` images in, logits out —
so that every attack, suite, evaluation and sanity check of the package runs on it unchanged. Each hides the
gradient an attack needs in a different way, the four ways Athalye et al. (2018) and Carlini et al. (2019) list:

- :class:`BitDepthReduction`: a non-differentiable input transform (the gradient of rounding is zero);
  broken by BPDA, the backward pass through the identity instead.
- :class:`RandomNoise`: a randomised input transform (each call draws new noise); broken by EOT, the gradient
  of the expectation over draws.
- :class:`SaturatedLogits`: logits so large that the softmax saturates and the cross-entropy gradient is exactly
  zero (what defensive distillation does); broken by a margin loss, which does not saturate.
- :class:`CounterAttack`: a test-time defence that optimises the input before classifying it, written as such
  defences usually are, with the optimisation cut from the graph; broken by an attack that accounts for it.

None of them adds robustness that survives an attack aimed at it; :mod:`zsr_lab.grader` lets a reader prove it.
"""

from __future__ import annotations

import torch
from torch import nn

from .memo import content_digest
from .models import ZeroShotCLIP


class Defence(nn.Module):
    """A :class:`ZeroShotCLIP` behind an inference-time trick; attributes it does not have (``set_classifier``,
    ``class_embeddings``, ``image_size``, ``device``, ...) are the wrapped model's.

    Arguments:
        model: the zero-shot CLIP to defend, with its classifier installed (or installed later, through the
            defence).
    """

    hint = ""  # what the grader tells a reader whose attack did not get through

    def __init__(self, model: ZeroShotCLIP):
        super().__init__()
        self.model = model

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":  # not set yet: no model to ask
                raise
            return getattr(self.model, name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def content_fingerprint(self) -> str:
        """A hash of what decides this defence's outputs: its class, its settings, the state of its random source
        and the wrapped model's :meth:`~zsr_lab.models.ZeroShotCLIP.content_fingerprint` (cached grades and red
        flags are keyed by it)."""
        settings = {
            name: value for name, value in vars(self).items() if not name.startswith("_") and name != "training"
        }
        generator = settings.pop("generator", None)
        if isinstance(generator, torch.Generator):
            settings["generator_state"] = generator.get_state()
        return content_digest(
            [type(self).__module__, type(self).__qualname__, settings, self.model.content_fingerprint()]
        )


class BitDepthReduction(Defence):
    """Rounds every pixel to ``bits`` bits before classifying: small perturbations vanish in the rounding, and so
    does the gradient (rounding's derivative is zero almost everywhere).

    Arguments:
        model: the zero-shot CLIP to defend.
        bits: bits kept per pixel value (``2**bits`` levels in [0, 1]).

    Examples::
        >>> defended = BitDepthReduction(clip, bits=4)
        >>> defended(images).argmax(1)  # predictions on the rounded images
    """

    hint = (
        "the rounding has a zero gradient almost everywhere: differentiate through the identity instead "
        "(BPDA: x + (round(x) − x).detach())"
    )

    def __init__(self, model: ZeroShotCLIP, bits: int = 4):
        super().__init__(model)
        if not 1 <= bits <= 8:
            raise ValueError(f"bits must be between 1 and 8, got {bits}")
        self.levels = 2**bits - 1

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """The rounded images (no useful gradient)."""
        return torch.round(images * self.levels) / self.levels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(images))


class RandomNoise(Defence):
    """Adds Gaussian noise to every input before classifying it (random self-ensemble, Liu et al., 2018): each
    call sees different noise, so the gradient of one call says little about the next, and an attack that stops
    at the first call it fools has often fooled only that call.

    Arguments:
        model: the zero-shot CLIP to defend.
        sigma: the noise's standard deviation, in pixel units.
        generator: the random source (seeded with 0 when not given); the grader reseeds it.
    """

    hint = (
        "every call draws new noise: average the gradient over many draws (EOT) before each step, and do not "
        "stop at the first draw you fool"
    )

    def __init__(self, model: ZeroShotCLIP, sigma: float = 0.1, generator: torch.Generator | None = None):
        super().__init__(model)
        self.sigma = float(sigma)
        self.generator = generator or torch.Generator().manual_seed(0)

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """One random draw of the noisy images (differentiable)."""
        noise = torch.randn(images.shape, generator=self.generator).to(images)
        return (images + self.sigma * noise).clamp(0, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(images))


class SaturatedLogits(Defence):
    """Multiplies the logits by ``scale``: the predictions do not change, but for every image classified with any
    margin the softmax is exactly one-hot in floating point, so the cross-entropy and its gradient are exactly
    zero — what defensive distillation's high temperature does (Carlini & Wagner, 2016).

    Arguments:
        model: the zero-shot CLIP to defend.
        scale: the factor on the logits.
    """

    hint = (
        "the softmax is saturated, so the cross-entropy gradient is exactly zero: use a loss that does not "
        "saturate (a margin loss on the logits, as CW or DLR do)"
    )

    def __init__(self, model: ZeroShotCLIP, scale: float = 1e4):
        super().__init__(model)
        self.scale = float(scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scale * self.model(images)


class CounterAttack(Defence):
    """A test-time defence: before classifying, push each image ``steps`` signed-gradient steps within
    ``eps`` (pixels) away from where its own embedding is (maximise ``‖f(x + δ) − f(x)‖²``), the idea of
    counter-attacks on CLIP (Xing et al., 2025): an adversarial image sits in a falsely stable spot, and a
    small push frees it. The push is computed on a detached copy of the input, as test-time optimisation is
    usually written, so an attack on the defence sees the gradient of the classifier at the pushed image and
    nothing of the push itself.

    Arguments:
        model: the zero-shot CLIP to defend.
        eps: the push's ℓ∞ budget in pixel units.
        steps: signed-gradient steps of size ``eps / steps``.
    """

    hint = (
        "the defence moves every input before classifying it: attack the whole pipeline, counter-attack "
        "included (run it inside your objective), or aim past what it can undo (a margin loss with a large κ)"
    )

    def __init__(
        self, model: ZeroShotCLIP, eps: float = 4 / 255, steps: int = 2, generator: torch.Generator | None = None
    ):
        super().__init__(model)
        self.eps, self.steps = float(eps), int(steps)
        self.generator = generator or torch.Generator().manual_seed(0)

    def push(self, images: torch.Tensor) -> torch.Tensor:
        """The pushed images (computed without a graph to ``images``)."""
        start = images.detach()
        with torch.enable_grad():
            anchor = self.model.encode_image(start).detach()
            # a random start: at δ = 0 the distance is at its minimum and its gradient is zero
            delta = ((2 * torch.rand(start.shape, generator=self.generator) - 1) * self.eps).to(start)
            for _ in range(self.steps):
                delta.requires_grad_(True)
                distance = (self.model.encode_image(start + delta) - anchor).pow(2).sum()
                (grad,) = torch.autograd.grad(distance, delta)
                delta = (delta.detach() + self.eps / self.steps * grad.sign()).clamp(-self.eps, self.eps)
                delta = (start + delta).clamp(0, 1) - start
        return (start + delta).detach()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pushed = self.push(images)
        return self.model(images + (pushed - images).detach())  # the push, cut from the graph
