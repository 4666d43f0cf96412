"""Adversarial attacks on a :class:`ZeroShotCLIP`, in [0,1] pixel space.

torchattacks does the standard attacks (PGD, ℓ2 PGD, APGD, APGD-T, FAB, Square); this module configures them
the way the zero-shot robustness protocol needs (100 steps, ``n_classes`` per dataset, targeted variants over
at most 9 target classes, no second normalisation) and adds what torchattacks lacks: the "CW" margin-loss PGD
of the papers, restarts for PGD, and mixed-precision forward passes with a gradient scale that keeps fp16 input
gradients from underflowing.

Users write ℓ∞ budgets in units of 1/255 (``eps=1`` means 1/255); ℓ2 budgets are radii in [0,1] pixel units.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchattacks
from torchattacks.attack import Attack
from torch import nn

from .precision import PrecisionModel

ATTACKS = {  # name -> (norm, default steps, description)
    "pgd": ("Linf", 100, "ℓ∞ PGD on the cross-entropy of the 100-scaled logits, uniform random start"),
    "pgd_l2": ("L2", 100, "ℓ2 PGD on the cross-entropy"),
    "cw": ("Linf", 100, "ℓ∞ PGD on the margin loss −relu(z_y − max_{k≠y} z_k + κ), κ = 50 (the papers' 'CW')"),
    "apgd": ("Linf", 100, "APGD-CE then APGD-DLR (the papers' 'AutoAttack'; APGD-CE alone for < 3 classes)"),
    "autoattack": ("Linf", 100, "standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square (5000 queries)"),
}


@dataclass(frozen=True)
class AttackConfig:
    """One attack of the protocol, without its budget (ε comes separately, so one config sweeps many ε).

    Attributes:
        name: one of ``ATTACKS``.
        steps: iterations (100 in the protocol; PGD-10 for the PMG-AFT/TIMA protocol).
        step_size: ℓ∞: in units of 1/255 (default 1, the protocol's 1/255); ℓ2: pixel units (default 2.5·ε/steps).
            Unused by the parameter-free APGD/AutoAttack.
        restarts: random restarts (PGD, ℓ2 PGD, CW: keep the first successful one; APGD: its own restarts).
        kappa: the margin of the "CW" loss.
    """

    name: str = "pgd"
    steps: int = 100
    step_size: float | None = None
    restarts: int = 1
    kappa: float = 50.0

    def __post_init__(self):
        if self.name not in ATTACKS:
            raise ValueError(f"unknown attack {self.name!r}; choose one of {', '.join(ATTACKS)}")
        for field, value in (("steps", self.steps), ("restarts", self.restarts)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"step_size must be positive, got {self.step_size!r}")

    @property
    def norm(self) -> str:
        return ATTACKS[self.name][0]

    @property
    def label(self) -> str:
        """Short name for tables, e.g. ``PGD-100``."""
        return f"{self.name.upper().replace('_', '-')}-{self.steps}"

    def pixel_eps(self, eps: float) -> float:
        """The budget in [0,1] pixel units (ℓ∞ budgets are written in units of 1/255)."""
        check_eps(eps)
        return eps / 255 if self.norm == "Linf" else float(eps)

    def pixel_step(self, eps: float) -> float:
        if self.norm == "Linf":
            return (1.0 if self.step_size is None else self.step_size) / 255
        return self.step_size if self.step_size is not None else 2.5 * float(eps) / self.steps


def check_eps(eps) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"ε must be a number (ℓ∞ in units of 1/255, e.g. 1 for 1/255), got {type(eps).__name__}")
    if eps < 0:
        raise ValueError(f"ε must be ≥ 0, got {eps} (ℓ∞ budgets are written in units of 1/255, e.g. 1 for 1/255)")


def parse_attack(text: str) -> AttackConfig:
    """``"pgd-100"`` → PGD with 100 steps; ``"cw-10"``, ``"pgd_l2-50"``, ``"apgd"``, ``"autoattack"``."""
    name, _, steps = text.strip().lower().partition("-")
    if steps and not steps.isdigit():
        raise ValueError(f"cannot read {text!r}: write NAME or NAME-STEPS, e.g. pgd-100, cw-100, apgd")
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r} in {text!r}; choose one of {', '.join(ATTACKS)}")
    return AttackConfig(name, int(steps) if steps else ATTACKS[name][1])


class CWMarginPGD(Attack):
    r"""ℓ∞ PGD on the margin loss :math:`-\mathrm{relu}(z_y - \max_{k \ne y} z_k + \kappa)`: the papers' "CW".

    Not the Carlini–Wagner L2 optimiser: the same PGD loop as :class:`torchattacks.PGD` with another loss.

    Arguments:
        model (nn.Module): model taking [0,1] images and returning logits.
        eps (float): ℓ∞ budget in pixel units. (Default: 1/255)
        alpha (float): step size in pixel units. (Default: 1/255)
        steps (int): number of steps. (Default: 100)
        kappa (float): margin. (Default: 50)
        random_start (bool): uniform random start in the ε-ball. (Default: True)

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]. - labels: :math:`(N)`. - output: like images.

    Examples::
        >>> attack = CWMarginPGD(model, eps=1/255, alpha=1/255, steps=100)
        >>> adv_images = attack(images, labels)
    """

    def __init__(self, model, eps=1 / 255, alpha=1 / 255, steps=100, kappa=50.0, random_start=True):
        super().__init__("CWMarginPGD", model)
        self.eps, self.alpha, self.steps, self.kappa, self.random_start = eps, alpha, steps, kappa, random_start
        self.supported_mode = ["default"]

    def forward(self, images, labels):
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        adv_images = images.clone()
        if self.random_start:
            adv_images = (adv_images + torch.empty_like(adv_images).uniform_(-self.eps, self.eps)).clamp(0, 1)
        for _ in range(self.steps):
            adv_images.requires_grad_(True)
            cost = margin_loss(self.get_logits(adv_images), labels, self.kappa).sum()
            grad = torch.autograd.grad(cost, adv_images)[0]
            adv_images = adv_images.detach() + self.alpha * grad.sign()
            delta = torch.clamp(adv_images - images, min=-self.eps, max=self.eps)
            adv_images = torch.clamp(images + delta, min=0, max=1).detach()
        return adv_images


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """Per-example ``−relu(z_y − max_{k≠y} z_k + κ)``: 0 once the margin of a wrong class exceeds κ."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return -torch.relu(true - others + kappa)


class WithRestarts(Attack):
    """Runs an attack ``restarts`` times from new random starts; keeps, per image, the first that fools."""

    def __init__(self, attack: Attack, restarts: int):
        super().__init__(f"{attack.attack}x{restarts}", attack.model)
        self.inner, self.restarts = attack, restarts
        self.supported_mode = ["default"]

    def forward(self, images, labels):
        best = images.clone().detach().to(self.device)
        labels = labels.to(self.device)
        remaining = torch.ones(len(images), dtype=torch.bool, device=self.device)
        for _ in range(self.restarts):
            adv = self.inner(images, labels)
            with torch.no_grad():
                fooled = remaining & (self.get_logits(adv).argmax(1) != labels)
            best[fooled] = adv[fooled]
            remaining &= ~fooled
            if self.restarts > 1:
                best[remaining] = adv[remaining]  # still robust: keep the last attempt
        return best


def build_attack(model: nn.Module, config: AttackConfig, eps: float, *, n_classes: int, seed: int = 0,
                 precision: str = "fp32") -> Attack:
    """A ready-to-call attack ``attack(images, labels) -> adv_images`` on a model taking [0,1] images.

    Arguments:
        model: a :class:`ZeroShotCLIP` with its classifier set (or any module taking [0,1] images).
        config: which attack (:class:`AttackConfig` or a string such as ``"pgd-100"``).
        eps: the budget (ℓ∞ in units of 1/255).
        n_classes: classes of the current dataset (APGD-DLR, APGD-T, FAB-T need it).
        seed: seed of the parameter-free attacks' randomness.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` forward passes.
    """
    if isinstance(config, str):
        config = parse_attack(config)
    eps_px, step_px = config.pixel_eps(eps), config.pixel_step(eps)
    target = PrecisionModel(model, precision)
    if config.name == "pgd":
        attack = torchattacks.PGD(target, eps=eps_px, alpha=step_px, steps=config.steps, random_start=True)
    elif config.name == "pgd_l2":
        attack = torchattacks.PGDL2(target, eps=eps_px, alpha=step_px, steps=config.steps, random_start=True)
    elif config.name == "cw":
        attack = CWMarginPGD(target, eps=eps_px, alpha=step_px, steps=config.steps, kappa=config.kappa)
    elif config.name == "apgd":
        common = dict(norm="Linf", eps=eps_px, steps=config.steps, n_restarts=config.restarts, seed=seed)
        parts = [torchattacks.APGD(target, loss="ce", **common)]
        if n_classes >= 3:  # the DLR loss compares the three largest logits
            parts.append(torchattacks.APGD(target, loss="dlr", **common))
        return parts[0] if len(parts) == 1 else torchattacks.MultiAttack(parts)
    else:  # standard AutoAttack, with the reference's 100 steps and at most 9 target classes
        return _standard_autoattack(target, eps_px, config.steps, n_classes, seed)
    return WithRestarts(attack, config.restarts) if config.restarts > 1 else attack


def _standard_autoattack(target, eps_px, steps, n_classes, seed):
    n_targets = min(9, n_classes - 1)
    parts = [torchattacks.APGD(target, norm="Linf", eps=eps_px, steps=steps, loss="ce", seed=seed)]
    if n_classes >= 4:  # the targeted DLR loss needs the four largest logits
        apgd_t = torchattacks.APGDT(target, norm="Linf", eps=eps_px, steps=steps, seed=seed, n_classes=n_classes)
        apgd_t.n_target_classes = n_targets
        parts.append(apgd_t)
    fab_t = torchattacks.FAB(target, norm="Linf", eps=eps_px, steps=steps, seed=seed, multi_targeted=True,
                             n_classes=n_classes)
    fab_t.n_target_classes = n_targets
    parts += [fab_t, torchattacks.Square(target, norm="Linf", eps=eps_px, n_queries=5000, seed=seed)]
    return torchattacks.MultiAttack(parts)


def pgd_linf(objective, images: torch.Tensor, *, eps: float, step_size: float, steps: int,
             start: torch.Tensor | None = None, momentum: float | None = None,
             grad_scale: float = 1.0) -> torch.Tensor:
    r"""ℓ∞ PGD that maximises any objective of the perturbed images: the training attack of every method.

    torchattacks' PGD maximises the cross-entropy of a classifier; training needs the same loop on each
    method's own inner objective (the cross-entropy of the 100-scaled logits for TeCoA, PMG-AFT and TGA-ZSR,
    FARE's embedding distance). Only the perturbation's gradient is taken, so the caller's parameter
    gradients stay untouched; freeze the parameters while attacking (``requires_grad_(False)``) to save the
    memory and time of their backward pass.

    Arguments:
        objective: ``adv -> scalar loss`` to maximise (a mean or a sum over the batch: only signs are used).
        images: clean images in [0, 1].
        eps: ℓ∞ budget in pixel units.
        step_size: step in pixel units.
        steps: number of steps (0 returns the random start).
        start: uniform [0, 1) noise shaped like ``images`` for the random start in [-ε, ε] (the training engine
            draws it per step, so that data-parallel runs draw the same noise as one process); ``None``: no
            random start.
        momentum: ``None`` for plain sign steps; μ for the momentum sign steps of FARE,
            ``v ← sign(μ·v + sign(g))``, ``x ← x + α·v``.
        grad_scale: multiplies the objective before the backward pass (fp16 loss scaling; signs unaffected).

    Shape:
        - images, start, output: :math:`(N, C, H, W)`.

    Examples::
        >>> ce = lambda adv: F.cross_entropy(model(adv), labels)
        >>> adv = pgd_linf(ce, images, eps=1/255, step_size=1/255, steps=2, start=torch.rand_like(images))
    """
    images = images.detach()
    delta = torch.zeros_like(images) if start is None else (2 * start.to(images) - 1) * eps
    delta = (images + delta).clamp(0, 1) - images
    velocity = torch.zeros_like(images)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = objective(images + delta)
        grad, = torch.autograd.grad(loss * grad_scale, delta)
        step = grad.sign()
        if momentum is not None:
            velocity = torch.sign(momentum * velocity + step)
            step = velocity
        delta = (delta.detach() + step_size * step).clamp(-eps, eps)
        delta = (images + delta).clamp(0, 1) - images  # keep x + δ in the image box
    return (images + delta).detach()
