"""Sanity checks that catch gradient masking and broken attacks (Carlini et al.'s checklist, in small).

A defence that only *looks* robust usually fails one of these: robust accuracy that does not fall as ε grows,
that stays well above 0 at a huge ε, that rises with more attack steps, or that a stronger attack (APGD) does
not lower; and an attack whose perturbations leave the ε-ball or the image box is simply wrong.
"""
from __future__ import annotations

import pandas as pd

from .attacks import AttackConfig
from .evaluate import evaluate_robustness
from .models import ZeroShotCLIP


def check_evaluation(model: ZeroShotCLIP, dataset: str, *, eps: tuple[float, ...] = (1, 2, 4),
                     large_eps: float = 64, steps: tuple[int, int] = (10, 50), n_examples: int | None = 200,
                     tolerance: float = 2.0, batch_size: int = 256, data_root=None, seed: int = 0,
                     precision: str = "fp32") -> pd.DataFrame:
    """Run the checks on one dataset; returns one row per check with ``passed`` and the numbers behind it.

    Arguments:
        eps: the ε sweep (units of 1/255), ascending.
        large_eps: a budget under which any honest evaluation reaches about 0 % robust accuracy (attacked with
            step size ε/4, so that the few steps can cross the ball).
        steps: (few, many) PGD steps; the sweep uses the protocol's step of 1/255.
        tolerance: accuracy points allowed for sampling noise.
    """
    few, many = steps
    budgets = sorted(eps)
    common = dict(n_examples=n_examples, batch_size=batch_size, data_root=data_root, seed=seed,
                  precision=precision, progress=False)
    table = evaluate_robustness(model, [dataset], [f"pgd-{few}", f"pgd-{many}", f"apgd-{few}"], budgets, **common)
    large = evaluate_robustness(model, [dataset], [AttackConfig("pgd", few, step_size=large_eps / 4)],
                                [large_eps], **common).robust_accuracy.iloc[0]
    robust = table.set_index(["attack", "eps"])["robust_accuracy"]
    pgd_few, pgd_many, apgd = f"PGD-{few}", f"PGD-{many}", f"APGD-{few}"
    sweep = [robust[(pgd_few, e)] for e in budgets]
    checks = [
        ("robust accuracy falls as ε grows", all(b <= a + tolerance for a, b in zip(sweep, sweep[1:])),
         ", ".join(f"ε={e:g}: {r:.1f}" for e, r in zip(budgets, sweep))),
        (f"ε = {large_eps:g}/255 drives robust accuracy to ~0", large <= tolerance, f"{large:.1f} %"),
        (f"{many} steps never help the defender over {few}",
         all(robust[(pgd_many, e)] <= robust[(pgd_few, e)] + tolerance for e in budgets),
         ", ".join(f"ε={e:g}: {robust[(pgd_few, e)]:.1f} → {robust[(pgd_many, e)]:.1f}" for e in budgets)),
        ("APGD is at least as strong as PGD", all(robust[(apgd, e)] <= robust[(pgd_few, e)] + tolerance
                                                  for e in budgets),
         ", ".join(f"ε={e:g}: PGD {robust[(pgd_few, e)]:.1f} / APGD {robust[(apgd, e)]:.1f}" for e in budgets)),
        ("perturbations stay in the ε-ball and the [0,1] box",
         bool(((table.max_perturbation <= table.eps_pixels + 1e-6) & (table.out_of_box == 0)).all()),
         f"largest ‖δ‖∞ / ε: {(table.max_perturbation / table.eps_pixels).max():.4f}"),
    ]
    return pd.DataFrame(checks, columns=["check", "passed", "detail"]).assign(dataset=dataset,
                                                                             n=int(table.n.iloc[0]))
