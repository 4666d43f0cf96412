"""Attack suites and their per-image worst case (AutoAttack's rules).

An image counts as robust only if every member of the suite fails on it. Members run as a cascade: each attacks
only the images that survived the members before it, so a broken image is never attacked again, and the worst
case is the share that survives the last member. Without the cascade every member attacks every clean-correct
image, which costs more but also gives each member's own robust accuracy on the same images.

Suites are written as members and named suites joined by ``+``:

- ``aa``: APGD-CE, then APGD-T on the top-9 target classes, 100 iterations each: the robust-CLIP standard
  (chs20/RobustVLM). APGD-T needs 4 classes: on 3-class sets APGD-DLR takes its place, on 2-class sets APGD-CE
  runs alone.
- ``aa-standard``: the full standard AutoAttack: ``aa`` followed by FAB-T and Square with 5,000 queries.
- ``papers-aa``: APGD-CE + APGD-DLR, what the TGA-ZSR, Comp-TGA, PMG-AFT and TIMA papers call "AutoAttack";
  weaker than ``aa``.
- ``aa-20`` (any named suite with ``-K``): the same members with K iterations each (Square keeps its queries).
- ``aa-10:targets=3``: options after a colon: ``targets`` (APGD-T, FAB-T) and ``restarts`` (every member).
- members: ``pgd-100``, ``cw-100``, ``apgd_ce-100``, ``apgd_dlr-100``, ``apgd_t-100``, ``fab_t-100``,
  ``square-5000``, ``pgd_l2-100`` (see :data:`zsr_lab.attacks.ATTACKS`); e.g. ``pgd-100+cw-100+aa``.

Members written by hand run as written (one that needs more classes than a dataset has is an error); members
that come from a named suite adapt to the dataset's classes as described above.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .attack_base import positional_seeds, seed_from
from .attacks import ATTACKS, AttackConfig, attack_iterations, build_attack, parse_attack
from .precision import autocast
from .registry import Registry

SUITES: Registry[tuple[str, ...]] = Registry(
    "suite",
    {
        "aa": ("apgd_ce-100", "apgd_t-100"),
        "aa-standard": ("apgd_ce-100", "apgd_t-100", "fab_t-100", "square-5000"),
        "papers-aa": ("apgd_ce-100", "apgd_dlr-100"),
    },
)


@dataclass(frozen=True)
class Suite:
    """An ordered set of attacks whose per-image worst case is the robust accuracy.

    Attributes:
        text: the suite as written, normalised (``"pgd-10+aa"``); what result files are keyed by.
        members: the attacks in cascade order.
        adaptive: per member, whether it came from a named suite and so adapts to the dataset's classes.
    """

    text: str
    members: tuple[AttackConfig, ...]
    adaptive: tuple[bool, ...]

    @property
    def label(self) -> str:
        """For tables: a single attack's own label (``PGD-10``), otherwise the suite as written."""
        return self.members[0].label if len(self.members) == 1 and not self.adaptive[0] else self.text

    @property
    def norm(self) -> str:
        return self.members[0].norm

    def members_for(self, n_classes: int) -> tuple[AttackConfig, ...]:
        """The members that run on a dataset with ``n_classes`` classes.

        Raises:
            ValueError: a member written by hand needs more classes than the dataset has.
        """
        chosen = []
        for member, adaptive in zip(self.members, self.adaptive):
            if n_classes >= member.kind.min_classes:
                chosen.append(member)
            elif not adaptive:
                raise ValueError(
                    f"{member.label} needs at least {member.kind.min_classes} classes, but this "
                    f"dataset has {n_classes}: drop it from {self.text!r} for this dataset, or use "
                    f"a named suite such as 'aa', which adapts to the number of classes"
                )
            elif member.name == "apgd_t" and n_classes == 3:
                chosen.append(replace(member, name="apgd_dlr"))  # the strongest second loss 3 classes allow
        unique = []
        for member in chosen:  # aa on 3 classes after an explicit apgd_dlr must not run it twice
            if member not in unique:
                unique.append(member)
        return tuple(unique)

    def describe(self) -> str:
        """One line: the members in order."""
        return " → ".join(m.label for m in self.members)


def parse_suite(text: str | AttackConfig | Suite) -> Suite:
    """``"aa"``, ``"aa-standard"``, ``"papers-aa"``, ``"aa-20"``, ``"pgd-100"``, ``"pgd-100+cw-100+aa"`` → a
    :class:`Suite` (an :class:`AttackConfig` becomes a one-member suite).

    Raises:
        ValueError: an unknown suite or member, with the names that exist.
    """
    if isinstance(text, Suite):
        return text
    if isinstance(text, AttackConfig):
        return Suite(text.label.lower(), (text,), (False,))
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"an attack suite is a string such as 'aa' or 'pgd-100+aa', got {text!r}")
    members, adaptive, parts = [], [], []
    for token in (t.strip().lower() for t in text.split("+")):
        token, _, options = token.partition(":")
        name, _, steps = token.rpartition("-")
        if token in SUITES or (name in SUITES and steps.isdigit()):
            base = token if token in SUITES else name
            configs = []
            for member in SUITES[base]:
                config = parse_attack(member)
                if token not in SUITES and config.name != "square":
                    config = replace(config, steps=int(steps))
                configs.append(config)
            adaptive += [True] * len(configs)
        else:
            try:
                configs = [parse_attack(token)]
            except ValueError as err:
                close = SUITES.close_matches(token)
                hint = f"did you mean the suite {close[0]!r}? " if close else ""
                raise ValueError(
                    f"{err}. {hint}Suites: {', '.join(SUITES)} (or NAME-K for K iterations); "
                    f"members: {', '.join(ATTACKS)}; join them with '+'"
                ) from None
            adaptive.append(False)
        members += _with_options(configs, options, text)
        parts.append(token + (f":{options}" if options else ""))
    norms = {m.norm for m in members}
    if len(norms) > 1:
        raise ValueError(
            f"{text!r} mixes ℓ∞ and ℓ2 attacks, whose budgets mean different things: evaluate them as separate suites"
        )
    return Suite("+".join(parts), tuple(members), tuple(adaptive))


OPTIONS = ("targets", "restarts")


def _with_options(configs: list[AttackConfig], options: str, text: str) -> list[AttackConfig]:
    """Apply ``targets=N`` (to the targeted members) and ``restarts=N`` (to all) written after a colon."""
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key not in OPTIONS or not value.isdigit():
            raise ValueError(
                f"cannot read the option {item!r} in {text!r}: write e.g. aa-10:targets=3 or "
                f"pgd-10:restarts=2 (options: {', '.join(OPTIONS)})"
            )
        configs = [replace(c, **{key: int(value)}) if key == "restarts" or c.targeted else c for c in configs]
    return configs


@dataclass
class SuiteOutcome:
    """What a suite did to one batch of clean-correct images.

    Attributes:
        members: the members that ran, in order.
        robust_after: per member, ``[N]`` bool: robust against it and every member before it.
        robust_alone: per member, ``[N]`` bool: robust against it alone (without the cascade only).
        iterations: per member, ``[N]`` long: forward-backward passes (Square: queries) each image received.
        attacked: per member, ``[N]`` bool: the images this call attacked with it (the others it skipped, or took
            from ``known``); their verdicts are ``survived[k][attacked[k]]``.
        survived: per member, ``[N]`` bool: survived this member (meaningful where it attacked or knew the image).
        perturbation: per member, ``[N]`` float: each attacked image's perturbation size (‖δ‖∞ or ‖δ‖₂, pixels).
        excursion: per member, ``[N]`` float: each attacked image's largest excursion outside [0, 1].
    """

    members: tuple[AttackConfig, ...]
    robust_after: list[torch.Tensor]
    robust_alone: list[torch.Tensor] | None
    iterations: list[torch.Tensor]
    attacked: list[torch.Tensor]
    survived: list[torch.Tensor]
    perturbation: list[torch.Tensor]
    excursion: list[torch.Tensor]

    @property
    def robust(self) -> torch.Tensor:
        """The per-image worst case: robust against every member."""
        return self.robust_after[-1]

    @property
    def max_perturbation(self) -> list[float]:
        """Per member, the largest perturbation it produced (pixel units)."""
        return [float(p.max()) if len(p) else 0.0 for p in self.perturbation]

    @property
    def out_of_box(self) -> list[float]:
        """Per member, the largest excursion of its images outside [0, 1]."""
        return [float(e.max()) if len(e) else 0.0 for e in self.excursion]


STOPPING_RULES = ("any", "last")


def run_suite(
    model,
    members,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    n_classes: int,
    seed: int = 0,
    precision: str = "fp32",
    stopping: str = "any",
    cascade: bool = True,
    early_exit: bool = True,
    seeds=None,
    known=None,
) -> SuiteOutcome:
    """Attack one batch with every member and take the per-image worst case.

    Every image's randomness comes from its own seed, so an image's verdict is the same in any batch, at any
    batch size, with or without the cascade (zsr_lab's PGD, CW and APGD family; the reference FAB-T and Square
    draw per batch).

    Arguments:
        model: takes [0,1] images, returns logits (a :class:`ZeroShotCLIP` with its classifier set).
        members: ``Suite.members_for(n_classes)``.
        images, labels: clean images in [0, 1] that the model classifies correctly, and their labels.
        eps: the budget (ℓ∞ in units of 1/255).
        seed: without ``seeds``, each member's images are seeded from it, the member and their position.
        stopping: ``"any"``: PGD and CW count an image broken at the first misclassified iterate and stop there;
            ``"last"``: only their last iterate counts (what the papers report). The APGD family always counts
            any iterate, as the reference does.
        cascade: each member attacks only the survivors of the ones before it (AutoAttack's rule).
        early_exit: the APGD family drops an image from the batch once it is fooled (same verdicts, fewer
            iterations; off only to measure the saving).
        seeds: ``member -> [N]`` integer seeds, one per image (the evaluation derives them from the protocol's
            seed, the member, ε and the image's identity in its split).
        known: ``member -> (verdicts, passes)`` or ``None``: verdicts already recorded (``[N]`` int8: 1 survived,
            0 broken, -1 unknown) and the passes they cost; a known image is not attacked again by that member.

    Shape:
        - images: :math:`(N, C, H, W)`; labels: :math:`(N)`.
    """
    if stopping not in STOPPING_RULES:
        raise ValueError(f"stopping must be 'any' or 'last', got {stopping!r}")
    device, n = images.device, len(images)
    robust = torch.ones(n, dtype=torch.bool, device=device)
    outcome = SuiteOutcome(tuple(members), [], [] if not cascade else None, [], [], [], [], [])
    for member in members:
        wanted = robust.clone() if cascade else torch.ones(n, dtype=torch.bool, device=device)
        survived = torch.zeros(n, dtype=torch.bool, device=device)
        iterations = torch.zeros(n, dtype=torch.long, device=device)
        recorded = None if known is None else known(member)
        if recorded is not None:
            verdicts, passes = (t.to(device) for t in recorded)
            have = wanted & (verdicts >= 0)
            survived[have], iterations[have] = verdicts[have] == 1, passes[have]
            wanted &= ~have
        index = wanted.nonzero().squeeze(1)
        perturbation = torch.zeros(n, device=device)
        excursion = torch.zeros(n, device=device)
        if len(index):
            exits = early_exit if member.name.startswith("apgd") else stopping == "any"
            member_seed = seed_from(seed, member.label)
            attack = build_attack(
                model, member, eps, n_classes=n_classes, seed=member_seed, precision=precision, early_stop=exits
            )
            image_seeds = positional_seeds(n, member_seed) if seeds is None else torch.as_tensor(seeds(member))
            x, y = images[index], labels[index]
            adv = attack(x, y, image_seeds[index.cpu()]).detach()
            iterations[index] = attack_iterations(attack, len(index)).to(device)
            with torch.no_grad():
                with autocast(precision, device):
                    survived[index] = model(adv).argmax(1) == y
                delta = (adv - x).flatten(1)
                perturbation[index] = (delta.abs().amax(1) if member.norm == "Linf" else delta.norm(dim=1)).float()
                excursion[index] = (adv - adv.clamp(0, 1)).flatten(1).abs().amax(1).float()
        if not cascade:
            outcome.robust_alone.append(survived)
        robust = robust & survived
        outcome.robust_after.append(robust.clone())
        outcome.iterations.append(iterations)
        outcome.attacked.append(wanted)
        outcome.survived.append(survived)
        outcome.perturbation.append(perturbation)
        outcome.excursion.append(excursion)
    return outcome
