"""Numerical precision of forward passes: fp32 by default, bf16/fp16 autocast as an option."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FP16_GRAD_SCALE = 2.0**12


def autocast(precision: str, device: torch.device):
    """A context that runs the forward pass in ``precision`` (``"fp32"``, ``"bf16"`` or ``"fp16"``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient on the way back (loss scaling for fp16 input gradients)."""

    @staticmethod
    def forward(ctx, logits, scale):
        ctx.scale = scale
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class PrecisionModel(nn.Module):
    """Runs a model under autocast and returns float32 logits; in fp16, scales input gradients up.

    Attacks only use the gradient's direction (sign, or normalised for ℓ2), so the scale changes nothing but
    keeps small fp16 gradients from flushing to zero. bf16 has fp32's exponent range and needs no scale.
    """

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        super().__init__()
        self.model, self.precision = model, precision
        self.device = next(model.parameters()).device
        autocast(precision, self.device)  # validates the name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, self.device):
            logits = self.model(images)
        logits = logits.float()
        if self.precision == "fp16" and torch.is_grad_enabled():
            logits = _ScaleGradient.apply(logits, FP16_GRAD_SCALE)
        return logits
