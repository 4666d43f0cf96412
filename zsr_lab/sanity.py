"""Sanity checks that catch gradient masking and broken attacks (Carlini et al.'s checklist, in small).

A defence that only *looks* robust usually fails one of these: robust accuracy that does not fall as ε grows,
that stays well above 0 at a huge ε, that rises with more attack steps, or that a stronger suite does not lower;
and an attack whose perturbations leave the ε-ball or the image box is simply wrong. The checks run on a suite:
its per-image worst case must never be above any of its members on their own, and every member must respect the
ball and the box.

:func:`red_flags` runs the signs of gradient masking directly on images, for any model-like callable (a
defence of :mod:`zsr_lab.defences` included): vanishing gradients, answers that change between calls, no
collapse at a huge ε, a margin loss or a black-box attack doing better than PGD on the cross-entropy.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from .attacks import build_attack
from .evaluate import evaluate_robustness
from .memo import remember
from .models import ZeroShotCLIP
from .protocol import Protocol
from .uncertainty import ALPHA, mcnemar_exact
from .worklog import work


def check_evaluation(
    model: ZeroShotCLIP,
    dataset: str,
    *,
    suite: str = "aa-20",
    eps: tuple[float, ...] = (1, 2, 4),
    large_eps: float = 64,
    steps: tuple[int, int] = (10, 50),
    n_examples: int | None = 200,
    tolerance: float = 2.0,
    batch_size: int = 256,
    data_root=None,
    seed: int = 0,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Run the checks on one dataset; returns one row per check with ``passed`` and the numbers behind it.

    Arguments:
        suite: the suite whose worst case is checked (see :mod:`zsr_lab.suites`); run without the cascade, so
            that each member's own robust accuracy is measured on the same images.
        eps: the ε sweep (units of 1/255), ascending.
        large_eps: a budget under which any honest evaluation reaches about 0 % robust accuracy.
        steps: (few, many) PGD steps; the sweep uses the protocol's step of 1/255.
        n_examples: images drawn from the dataset (``None``: the whole split).
        tolerance: accuracy points allowed for sampling noise.
    """
    few, many = steps
    budgets = sorted(eps)
    protocol = Protocol((dataset,), (f"pgd-{few}", f"pgd-{many}"), budgets, n_examples, seed, precision)
    common = dict(batch_size=batch_size, data_root=data_root, progress=False)
    pgd = evaluate_robustness(model, protocol, **common)
    worst = evaluate_robustness(model, protocol.replace(attacks=(suite,), cascade=False), **common)
    large = evaluate_robustness(model, protocol.replace(attacks=(suite,), eps=(large_eps,)), **common)
    robust = pgd.set_index(["attack", "eps"])["robust_accuracy"]
    pgd_few, pgd_many = f"PGD-{few}", f"PGD-{many}"
    sweep = list(worst.robust_accuracy)
    members = [(row.eps, m) for row in worst.itertuples() for m in row.members]
    table = pd.concat([pgd, worst, large])
    checks = [
        (
            f"{suite}: robust accuracy falls as ε grows",
            all(b <= a + tolerance for a, b in zip(sweep, sweep[1:])),
            ", ".join(f"ε={e:g}: {r:.1f}" for e, r in zip(budgets, sweep)),
        ),
        (
            f"{suite} at ε = {large_eps:g}/255 drives robust accuracy to ~0",
            large.robust_accuracy.iloc[0] <= tolerance,
            f"{large.robust_accuracy.iloc[0]:.1f} %",
        ),
        (
            f"{many} PGD steps never help the defender over {few}",
            all(robust[(pgd_many, e)] <= robust[(pgd_few, e)] + tolerance for e in budgets),
            ", ".join(f"ε={e:g}: {robust[(pgd_few, e)]:.1f} → {robust[(pgd_many, e)]:.1f}" for e in budgets),
        ),
        (
            f"the worst case of {suite} is at least as strong as PGD",
            all(r <= robust[(pgd_many, e)] + tolerance for e, r in zip(budgets, sweep)),
            ", ".join(
                f"ε={e:g}: PGD-{many} {robust[(pgd_many, e)]:.1f} / {suite} {r:.1f}" for e, r in zip(budgets, sweep)
            ),
        ),
        (
            "the worst case is never above any member on its own",
            all(row.robust_accuracy <= m["robust_alone"] + 1e-9 for row in worst.itertuples() for m in row.members),
            "; ".join(f"ε={e:g} {m['attack']}: {m['robust_alone']:.1f}" for e, m in members),
        ),
        (
            "every member's perturbations stay in the ε-ball and the [0,1] box",
            all(
                m["max_perturbation"] <= m["eps_pixels"] + 1e-6 and m["out_of_box"] == 0
                for row in table.itertuples()
                for m in row.members
            ),
            f"largest ‖δ‖∞ / ε: {(table.max_perturbation / table.eps_pixels).max():.4f}",
        ),
    ]
    return pd.DataFrame(checks, columns=["check", "passed", "detail"]).assign(dataset=dataset, n=int(pgd.n.iloc[0]))


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (%) of ``model`` on one batch of images."""
    return 100 * (model(images).argmax(1) == labels).float().mean().item()


def red_flags(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    n_classes: int,
    large_eps: float = 64,
    square_queries: int = 1000,
    tolerance: float = 2.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Signs that an evaluation of ``model`` is being fooled (Carlini et al.'s checklist), each measured on the
    given images; one row per flag with ``fired`` and the numbers behind it. An honestly robust model raises
    none; a model that masks its gradients raises at least one.

    Arguments:
        model: images in [0, 1] → logits (a :class:`ZeroShotCLIP` with its classifier, or a defence).
        images, labels: ``[N, C, H, W]`` in [0, 1] and ``[N]``.
        eps: the budget of the white-box and black-box attacks (units of 1/255); ``large_eps`` that of the
            collapse check.
        square_queries: queries of the black-box Square attack (0: skip that check, the slowest).
        tolerance: accuracy points allowed at the large budget (the collapse check). An attack "beats" another
            only when it breaks significantly more of the same images (McNemar's exact test at 5 %), so sampling
            noise never raises a flag.

    Examples::
        >>> zl.sanity.red_flags(SaturatedLogits(clip), images, labels, eps=8, n_classes=10)

    The flags are stored under the content of the model (weights, classifier, settings, random source), the
    images and the settings (:mod:`zsr_lab.memo`): asking again reads them.
    """
    settings = dict(
        eps=eps, n_classes=n_classes, large_eps=large_eps, square_queries=square_queries, tolerance=tolerance, seed=seed
    )
    generator = getattr(model, "generator", None)  # a randomised defence's own source: its state is in the key
    with work("measuring", "red flags") as record:
        flags, record.cached = remember(
            "red_flags",
            dict(model=model, images=images, labels=labels, **settings),
            lambda: _red_flags(model, images, labels, **settings),
            random_sources=[generator] if isinstance(generator, torch.Generator) else [],
        )
    return flags


def _red_flags(model, images, labels, *, eps, n_classes, large_eps, square_queries, tolerance, seed) -> pd.DataFrame:

    def survivors(attack: str, budget: float) -> torch.Tensor:
        adversarial = build_attack(model, attack, budget, n_classes=n_classes, seed=seed)(images, labels)
        with torch.no_grad():
            return model(adversarial).argmax(1) == labels

    def beats(challenger: torch.Tensor, reference: torch.Tensor) -> tuple[bool, str]:
        """Whether the attack that left the survivors ``challenger`` breaks significantly more of the same images
        than the one that left ``reference`` (McNemar's exact test on the images only one of them breaks)."""
        only_challenger = int((reference & ~challenger).sum())
        only_reference = int((challenger & ~reference).sum())
        p = mcnemar_exact(only_challenger, only_reference)
        return (
            only_challenger > only_reference and p < ALPHA,
            f"{only_challenger} vs {only_reference} images, exact p = {p:.2g}",
        )

    with torch.no_grad():
        first, second = model(images), model(images)
        right = first.argmax(1) == labels
    changed = int((first.argmax(1) != second.argmax(1)).sum())
    x = images.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels, reduction="sum"), x)
    zero = grad.flatten(1).abs().amax(1) == 0
    zero_share = 100 * zero[right].float().mean().item() if right.any() else 0.0
    pgd, cw, large = survivors("pgd-10", eps), survivors("cw-10", eps), survivors("apgd_ce-20", large_eps)
    percent = {name: 100 * float(kept.float().mean()) for name, kept in (("pgd", pgd), ("cw", cw), ("large", large))}
    margin_wins, margin_detail = beats(cw, pgd)
    flags = [
        (
            "the cross-entropy gradient vanishes",
            zero_share > 10,
            f"exactly zero for {zero_share:.0f} % of the correctly classified images",
        ),
        (
            "answers change between two calls on the same images",
            changed > 0 or not torch.equal(first, second),
            f"{changed} of {len(images)} predictions differ",
        ),
        (
            f"no collapse at ε = {large_eps:g}/255",
            percent["large"] > tolerance,
            f"APGD-CE-20: {percent['large']:.1f} % robust",
        ),
        (
            "a margin loss beats the cross-entropy",
            margin_wins,
            f"CW-10 {percent['cw']:.1f} % vs PGD-10 {percent['pgd']:.1f} % (broken by one only: {margin_detail})",
        ),
    ]
    if square_queries:
        square = survivors(f"square-{square_queries}", eps)
        square_wins, square_detail = beats(square, pgd)
        flags.append(
            (
                "a black-box attack beats the white-box one",
                square_wins,
                f"Square-{square_queries} {100 * float(square.float().mean()):.1f} % vs PGD-10 {percent['pgd']:.1f} % "
                f"(broken by one only: {square_detail})",
            )
        )
    return pd.DataFrame(flags, columns=["flag", "fired", "detail"]).assign(eps=float(eps), n=len(images))
