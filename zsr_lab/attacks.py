"""Adversarial attacks on a :class:`ZeroShotCLIP`, in [0,1] pixel space: the members of an attack suite.

Each attack here is one member; :mod:`zsr_lab.suites` combines members into suites (``aa``, ``aa-standard``, ...)
and takes the per-image worst case. zsr_lab's own sign-gradient PGD (cross-entropy or the papers' "CW" margin
loss) and APGD (:mod:`zsr_lab.apgd`) stop per image at the first iteration that misclassifies it when
``early_stop`` is on, and count the forward-backward passes each image received; ℓ2 PGD is the same loop with
normalised steps. FAB-T and Square are the reference AutoAttack's own (the ``pyautoattack`` package), configured as
its standard version runs them (at most 9 target classes, 5,000 queries, no rescaled schedule). Forward passes can
run in bf16/fp16 with a gradient scale that keeps fp16 input gradients from underflowing.

Users write ℓ∞ budgets in units of 1/255 (``eps=1`` means 1/255); ℓ2 budgets are radii in [0,1] pixel units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pyautoattack.fab_pt import FABAttack_PT
from pyautoattack.square import SquareAttack
from torch import nn

from .apgd import APGD
from .attack_base import Attack, derive_seeds, image_noise, seed_from
from .precision import PrecisionModel
from .registry import Registry


@dataclass(frozen=True)
class AttackKind:
    """A registered attack: its norm, default steps (queries for Square), fewest classes it needs, and what it is."""

    norm: str
    steps: int
    min_classes: int
    description: str


ATTACKS: Registry[AttackKind] = Registry(
    "attack",
    {
        "pgd": AttackKind("Linf", 100, 2, "ℓ∞ PGD on the cross-entropy of the 100-scaled logits, uniform random start"),
        "pgd_l2": AttackKind("L2", 100, 2, "ℓ2 PGD on the cross-entropy, uniform random start in the ball"),
        "cw": AttackKind(
            "Linf", 100, 2, "ℓ∞ PGD on the margin loss −relu(z_y − max_{k≠y} z_k + κ), κ = 50 (the papers' 'CW')"
        ),
        "apgd_ce": AttackKind("Linf", 100, 2, "APGD on the cross-entropy"),
        "apgd_dlr": AttackKind("Linf", 100, 3, "APGD on the DLR loss (needs 3 classes)"),
        "apgd_t": AttackKind("Linf", 100, 4, "APGD on the targeted DLR loss, top-9 target classes (needs 4 classes)"),
        "fab_t": AttackKind("Linf", 100, 2, "targeted FAB, top-9 target classes (the reference AutoAttack's)"),
        "square": AttackKind(
            "Linf", 5000, 2, "Square, the black-box score attack; steps = queries (the reference AutoAttack's)"
        ),
    },
)
RENAMED = {
    "apgd": "papers-aa (APGD-CE + APGD-DLR, the papers' 'AutoAttack') or aa (APGD-CE + APGD-T)",
    "autoattack": "aa-standard (APGD-CE, APGD-T, FAB-T, Square)",
}


@dataclass(frozen=True)
class AttackConfig:
    """One attack, without its budget (ε comes separately, so one config sweeps many ε).

    Attributes:
        name: one of ``ATTACKS``.
        steps: iterations (100 in the protocol; PGD-10 for the PMG-AFT/TIMA protocol); queries for Square.
        step_size: PGD and CW: ℓ∞ in units of 1/255 (default 1, the protocol's 1/255); ℓ2 PGD: pixel units
            (default 2.5·ε/steps). The APGD family sets its own.
        restarts: random restarts, each on the images still robust.
        kappa: the margin of the "CW" loss.
        targets: APGD-T and FAB-T: target classes (the top ones after the true class; capped at classes − 1).
    """

    name: str = "pgd"
    steps: int = 100
    step_size: float | None = None
    restarts: int = 1
    kappa: float = 50.0
    targets: int = 9

    def __post_init__(self):
        ATTACKS.check(self.name)
        for field, value in (("steps", self.steps), ("restarts", self.restarts), ("targets", self.targets)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"step_size must be positive, got {self.step_size!r}")

    @property
    def kind(self) -> AttackKind:
        return ATTACKS[self.name]

    @property
    def norm(self) -> str:
        return self.kind.norm

    @property
    def label(self) -> str:
        """Short name for tables, e.g. ``PGD-100``, ``APGD-T-100``."""
        return f"{self.name.upper().replace('_', '-')}-{self.steps}"

    @property
    def key(self) -> str:
        """What the attack is, as text: ``apgd_t-10:targets=3`` (name, steps and every setting that differs from
        the defaults); per-image verdicts are recorded under it."""
        defaults = AttackConfig(self.name)
        options = [
            f"{field}={getattr(self, field):g}"
            for field in ("step_size", "restarts", "kappa", "targets")
            if getattr(self, field) != getattr(defaults, field)
            and (field != "kappa" or self.name == "cw")
            and (field != "targets" or self.targeted)
        ]
        return f"{self.name}-{self.steps}" + (":" + ",".join(options) if options else "")

    @property
    def targeted(self) -> bool:
        return self.name in ("apgd_t", "fab_t")

    def pixel_eps(self, eps: float) -> float:
        """The budget in [0,1] pixel units (ℓ∞ budgets are written in units of 1/255)."""
        check_eps(eps)
        return eps / 255 if self.norm == "Linf" else float(eps)

    def pixel_step(self, eps: float) -> float | None:
        """The step in pixel units (``None`` for the attacks that choose their own)."""
        if self.name in ("pgd", "cw"):
            return (1.0 if self.step_size is None else self.step_size) / 255
        if self.name == "pgd_l2":
            return self.step_size if self.step_size is not None else 2.5 * float(eps) / self.steps
        return None

    def protocol(self, eps: float) -> dict:
        """Everything that defines this attack at budget ``eps``, for result rows."""
        return {
            "attack": self.label,
            "norm": self.norm,
            "eps_pixels": self.pixel_eps(eps),
            "steps": self.steps,
            "step_size": self.pixel_step(eps),
            "restarts": self.restarts,
            **({"kappa": self.kappa} if self.name == "cw" else {}),
            **({"targets": self.targets} if self.targeted else {}),
        }


MAX_EPS = 255.0  # in units of 1/255: a budget beyond the whole pixel range is a units mistake


def check_eps(eps) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"ε must be a number (ℓ∞ in units of 1/255, e.g. 1 for 1/255), got {type(eps).__name__}")
    if eps != eps or eps < 0:
        raise ValueError(f"ε must be ≥ 0, got {eps} (ℓ∞ budgets are written in units of 1/255, e.g. 1 for 1/255)")
    if eps > MAX_EPS:
        raise ValueError(
            f"ε = {eps} is larger than the whole pixel range: ℓ∞ budgets are written in units of "
            f"1/255 (write 4 for 4/255, not {eps})"
        )


def parse_attack(text: str) -> AttackConfig:
    """``"pgd-100"`` → PGD with 100 steps; ``"cw-10"``, ``"apgd_t-100"``, ``"square-5000"``, ``"pgd_l2-50"``."""
    name, _, steps = text.strip().lower().partition("-")
    if steps and not steps.isdigit():
        raise ValueError(f"cannot read {text!r}: write NAME or NAME-STEPS, e.g. pgd-100, cw-100, apgd_ce-100")
    if name in RENAMED:
        raise ValueError(f"{text!r} is now a suite: write {RENAMED[name]}")
    ATTACKS.check(name, where=f" in {text!r}", n=2)
    return AttackConfig(name, int(steps) if steps else ATTACKS[name].steps)


class SignPGD(Attack):
    r"""ℓ∞ PGD with sign steps on the cross-entropy or on the papers' "CW" margin loss
    :math:`-\mathrm{relu}(z_y - \max_{k \ne y} z_k + \kappa)` (not the Carlini–Wagner L2 optimiser).

    With ``early_stop`` an image that is misclassified at any iterate (the random start included) is an
    adversarial example inside the ball: it is kept as found and leaves the batch; without it, every image takes
    all steps and only the last iterate counts, as the papers report. The other images' trajectories are the same
    either way: each image's random start comes from its own seed (``attack(images, labels, seeds)``).

    Arguments:
        model (nn.Module): model taking [0,1] images and returning logits.
        eps (float): ℓ∞ budget in pixel units. (Default: 1/255)
        alpha (float): step size in pixel units. (Default: 1/255)
        steps (int): number of steps. (Default: 100)
        loss (str): ``"ce"`` or ``"margin"``. (Default: ``"ce"``)
        kappa (float): margin of the ``"margin"`` loss. (Default: 50)
        early_stop (bool): stop per image at the first misclassified iterate. (Default: True)

    Attributes:
        iterations: after a call, forward-backward passes each image received (``[N]``, long).

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]. - labels: :math:`(N)`. - output: like images.

    Examples::
        >>> attack = SignPGD(model, eps=1/255, alpha=1/255, steps=100, loss="margin")
        >>> adv_images = attack(images, labels)
    """

    def __init__(self, model, eps=1 / 255, alpha=1 / 255, steps=100, loss="ce", kappa=50.0, early_stop=True):
        super().__init__(f"SignPGD-{loss}", model)
        if loss not in ("ce", "margin"):
            raise ValueError(f"loss must be 'ce' or 'margin', got {loss!r}")
        self.eps, self.alpha, self.steps, self.loss, self.kappa = eps, alpha, steps, loss, kappa
        self.early_stop = early_stop

    def _objective(self, logits, labels):
        if self.loss == "ce":
            return F.cross_entropy(logits, labels, reduction="sum")
        return margin_loss(logits, labels, self.kappa).sum()

    def _random_start(self, images, seeds):
        return images + (2 * image_noise(seeds, images.shape, like=images) - 1) * self.eps

    def _step(self, adv, images, grad):
        """One ascent step from ``adv``, projected on the ε-ball around ``images`` (the caller clips to [0, 1])."""
        x = adv + self.alpha * grad.sign()
        return torch.minimum(torch.maximum(x, images - self.eps), images + self.eps)

    def forward(self, images, labels, seeds):
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        adv = self._random_start(images, seeds).clamp(0, 1)
        self.iterations = torch.zeros(len(images), dtype=torch.long, device=images.device)
        alive = torch.arange(len(images), device=images.device)
        for step in range(self.steps + 1):
            last = step == self.steps
            if last and not self.early_stop:
                break  # only the last iterate counts: the caller classifies it
            x = adv[alive].requires_grad_(True)
            with torch.enable_grad():
                logits = self.get_logits(x)
                grad = None if last else torch.autograd.grad(self._objective(logits, labels[alive]), x)[0]
            if self.early_stop:
                fooled = logits.detach().argmax(1) != labels[alive]
                if fooled.any():  # found: keep this iterate, stop attacking the image
                    keep = ~fooled
                    alive, grad = alive[keep], None if grad is None else grad[keep]
            if last or len(alive) == 0:
                break
            self.iterations[alive] += 1
            with torch.no_grad():
                adv[alive] = self._step(adv[alive], images[alive], grad).clamp(0, 1)
        return adv


class L2PGD(SignPGD):
    r"""ℓ2 PGD on the cross-entropy: steps along the gradient normalised per image, projection on the ℓ2 ball,
    a random start uniform in radius along a random direction; early stopping as :class:`SignPGD`.

    Arguments:
        model (nn.Module): model taking [0,1] images and returning logits.
        eps (float): ℓ2 radius in pixel units.
        alpha (float): step length in pixel units.
        steps (int): number of steps. (Default: 100)
        early_stop (bool): stop per image at the first misclassified iterate. (Default: True)

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]. - labels: :math:`(N)`. - output: like images.

    Examples::
        >>> attack = L2PGD(model, eps=0.5, alpha=0.5 * 2.5 / 100, steps=100)
        >>> adv_images = attack(images, labels)
    """

    def __init__(self, model, eps=0.5, alpha=0.0125, steps=100, early_stop=True):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, loss="ce", early_stop=early_stop)
        self.name = "L2PGD"

    def _random_start(self, images, seeds):
        direction = image_noise(seeds, images.shape, like=images, normal=True)
        radius = image_noise(derive_seeds(seeds, "radius"), (len(images),), like=images)
        return images + direction / _l2(direction) * radius.view(-1, *[1] * (images.dim() - 1)) * self.eps

    def _step(self, adv, images, grad):
        moved = adv + self.alpha * grad / _l2(grad).clamp_min(1e-12) - images
        return images + moved * (self.eps / _l2(moved).clamp_min(1e-12)).clamp(max=1.0)


def _l2(batch: torch.Tensor) -> torch.Tensor:
    """Per-image ℓ2 norms, shaped to broadcast against the batch."""
    return batch.flatten(1).norm(dim=1).view(-1, *[1] * (batch.dim() - 1))


class ReferenceAttack(Attack):
    """FAB-T or Square from the reference AutoAttack (``pyautoattack``), as a member: its random generator is
    forked (the reference reseeds the global one), and every image is counted at the nominal budget (FAB-T: steps
    × target classes; Square: queries), an upper bound of what it spent.

    The reference draws its randomness for a whole batch, so its verdicts, unlike those of zsr_lab's own attacks,
    can depend on the batch: it is seeded from the seeds of the batch's images, so the same batch gives the same
    result (resumed, sharded or re-run), but another batching may not."""

    def __init__(self, name: str, model, reference, budget: int):
        super().__init__(name, model)
        self.reference, self.budget = reference, budget

    def forward(self, images, labels, seeds):
        images, labels = images.clone().detach().to(self.device), labels.to(self.device)
        self.reference.seed = seed_from(*seeds.tolist())
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            adv = self.reference.perturb(images, labels)
        self.iterations = torch.full((len(images),), self.budget, dtype=torch.long, device=self.device)
        return adv.detach()


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """Per-example ``−relu(z_y − max_{k≠y} z_k + κ)``: 0 once the margin of a wrong class exceeds κ."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return -torch.relu(true - others + kappa)


class WithRestarts(Attack):
    """Runs an attack ``restarts`` times from new random starts, each time on the images still robust; keeps, per
    image, the first adversarial found (the last attempt for the images that stay robust)."""

    def __init__(self, attack: Attack, restarts: int):
        super().__init__(f"{attack.name}x{restarts}", attack.model)
        self.inner, self.restarts = attack, restarts

    def forward(self, images, labels, seeds):
        images, labels = images.clone().detach().to(self.device), labels.to(self.device)
        best = images.clone()
        self.iterations = torch.zeros(len(images), dtype=torch.long, device=self.device)
        remaining = torch.arange(len(images), device=self.device)
        for restart in range(self.restarts):
            # the first run draws what the attack alone would; each restart its own stream per image
            run_seeds = (
                seeds[remaining.cpu()] if restart == 0 else derive_seeds(seeds[remaining.cpu()], "restart", restart)
            )
            adv = self.inner(images[remaining], labels[remaining], run_seeds)
            self.iterations[remaining] += attack_iterations(self.inner, len(remaining))
            best[remaining] = adv
            with torch.no_grad():
                fooled = self.get_logits(adv).argmax(1) != labels[remaining]
            remaining = remaining[~fooled]
            if len(remaining) == 0:
                break
        return best


def attack_iterations(attack: Attack, n_images: int) -> torch.Tensor:
    """Forward-backward passes (queries for Square) each image of the last call received: counted by zsr_lab's
    attacks; the nominal budget for the reference FAB-T and Square (an upper bound: Square stops early inside)."""
    if len(attack.iterations) != n_images:
        raise ValueError(f"{attack.name} last attacked {len(attack.iterations)} images, not {n_images}")
    return attack.iterations


def build_attack(
    model: nn.Module,
    config: AttackConfig | str,
    eps: float,
    *,
    n_classes: int,
    seed: int = 0,
    precision: str = "fp32",
    early_stop: bool = True,
) -> Attack:
    """A ready-to-call attack ``attack(images, labels) -> adv_images`` on a model taking [0,1] images.

    Arguments:
        model: a :class:`ZeroShotCLIP` with its classifier set (or any module taking [0,1] images).
        config: which attack (:class:`AttackConfig` or a string such as ``"pgd-100"``).
        eps: the budget (ℓ∞ in units of 1/255).
        n_classes: classes of the current dataset (APGD-DLR, APGD-T, FAB-T need it).
        seed: seed of the APGD family's random starts and of FAB's and Square's randomness.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` forward passes.
        early_stop: PGD, CW and the APGD family stop per image at the first misclassified iterate (the APGD
            family counts such an image as broken either way, as the reference does; this only saves its
            iterations).

    Raises:
        ValueError: the dataset has fewer classes than the attack needs.
    """
    if isinstance(config, str):
        config = parse_attack(config)
    if n_classes < config.kind.min_classes:
        raise ValueError(
            f"{config.label} needs at least {config.kind.min_classes} classes, the dataset has "
            f"{n_classes}: leave it out for this dataset (the suite aa does so by itself)"
        )
    eps_px, step_px = config.pixel_eps(eps), config.pixel_step(eps)
    target = PrecisionModel(model, precision)
    n_targets = min(config.targets, n_classes - 1)
    if config.name in ("pgd", "cw"):
        attack = SignPGD(
            target,
            eps=eps_px,
            alpha=step_px,
            steps=config.steps,
            loss="ce" if config.name == "pgd" else "margin",
            kappa=config.kappa,
            early_stop=early_stop,
        )
    elif config.name == "pgd_l2":
        attack = L2PGD(target, eps=eps_px, alpha=step_px, steps=config.steps, early_stop=early_stop)
    elif config.name.startswith("apgd"):
        loss = {"apgd_ce": "ce", "apgd_dlr": "dlr", "apgd_t": "dlr_targeted"}[config.name]
        return APGD(
            target,
            eps=eps_px,
            steps=config.steps,
            loss=loss,
            restarts=config.restarts,
            n_targets=n_targets,
            seed=seed,
            early_stop=early_stop,
        )
    elif config.name == "fab_t":
        fab = FABAttack_PT(
            target,
            norm="Linf",
            n_restarts=1,
            n_iter=config.steps,
            eps=eps_px,
            seed=seed,
            targeted=True,
            n_target_classes=n_targets,
            device=target.device,
        )
        attack = ReferenceAttack(config.label, target, fab, config.steps * n_targets)
    else:
        square = SquareAttack(
            target,
            norm="Linf",
            n_queries=config.steps,
            eps=eps_px,
            p_init=0.8,
            n_restarts=1,
            seed=seed,
            resc_schedule=False,
            device=target.device,
        )
        attack = ReferenceAttack(config.label, target, square, config.steps)
    attack.seed = seed
    if config.restarts > 1:
        attack = WithRestarts(attack, config.restarts)
        attack.seed = seed
    return attack


def pgd_linf(
    objective,
    images: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    start: torch.Tensor | None = None,
    momentum: float | None = None,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    r"""ℓ∞ PGD that maximises any objective of the perturbed images: the training attack of every method.

    An evaluation attack maximises the cross-entropy of a classifier; training needs the same loop on each
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
        (grad,) = torch.autograd.grad(loss * grad_scale, delta)
        step = grad.sign()
        if momentum is not None:
            velocity = torch.sign(momentum * velocity + step)
            step = velocity
        delta = (delta.detach() + step_size * step).clamp(-eps, eps)
        delta = (images + delta).clamp(0, 1) - images  # keep x + δ in the image box
    return (images + delta).detach()
