"""Sentences generated from result tables: what the chapters state about their own numbers.

A chapter that says "the attack moves the attention twice as far as noise" is right for the run that was
written about and wrong after the next change. The chapters print these sentences instead, computed from the
tables next to them, and the tests check each sentence against the table it describes.
"""
from __future__ import annotations

import pandas as pd

from .evaluate import select_attack


def first_budget_below_half(sweep: pd.DataFrame) -> str:
    """Where robust accuracy first falls below half of the clean accuracy, for the mean over datasets and per
    dataset (an ε sweep of one attack whose ε = 0 rows are the clean accuracy)."""
    by_set = sweep.pivot_table(index="dataset", columns="eps", values="robust_accuracy", sort=False)
    if 0 not in by_set.columns:
        raise ValueError("the sweep needs its ε = 0 rows (the clean accuracy)")
    budgets = [eps for eps in by_set.columns if eps > 0]

    def first(accuracy: pd.Series) -> str:
        below = [eps for eps in budgets if accuracy[eps] < accuracy[0] / 2]
        return f"{below[0]:g}/255" if below else f"not by {budgets[-1]:g}/255"

    mean = by_set.mean()
    per_set = "; ".join(f"{name}: {first(row)}" for name, row in by_set.iterrows())
    return (f"Mean over the {len(by_set)} sets: {mean[0]:.1f} % clean, {mean[budgets[0]]:.1f} % at "
            f"{budgets[0]:g}/255, {mean[budgets[-1]]:.1f} % at {budgets[-1]:g}/255; first below half of clean at "
            f"{first(mean)}. Per set: {per_set}.")


def fine_tuning_change(table: pd.DataFrame, before: str, after: str, eps: float) -> str:
    """How fine-tuning changed clean and robust accuracy (robust under the table's first attack at ``eps``),
    on average over the datasets and where it changed most: ``before`` and ``after`` are method names."""
    rows = select_attack(table[(table["eps"] == eps) & (table["dataset"] != "mean")])
    grid = rows.pivot_table(index="dataset", columns="method", values=["clean_accuracy", "robust_accuracy"],
                            sort=False)
    lines = []
    for value, label in (("clean_accuracy", "clean accuracy"), ("robust_accuracy", f"robust accuracy at {eps:g}/255")):
        change = grid[(value, after)] - grid[(value, before)]
        lines.append(f"{label}: {change.mean():+.1f} points on average over {len(change)} sets, from "
                     f"{change.min():+.1f} ({change.idxmin()}) to {change.max():+.1f} ({change.idxmax()})")
    return f"{after} against {before}: " + "; ".join(lines) + "."


def drift_ratio(drift: pd.DataFrame) -> str:
    """How much further the attack moves the attention than random noise of the same size, per dataset (a
    :func:`zsr_lab.attention.measure_attention_drift` table of one model)."""
    ratio = drift["adversarial"] / drift["random_noise"]
    parts = [f"{r:.1f}× on {name}" for name, r in zip(drift["dataset"], ratio)]
    verdict = ("further than noise on every set" if (ratio > 1).all() else
               f"further than noise on {int((ratio > 1).sum())} of {len(ratio)} sets")
    return f"The attack moves the attention {verdict}: " + ", ".join(parts) + "."


def tradeoff_extremes(summary: pd.DataFrame, eps: float, *, reference: str = "tecoa",
                      pretrained: str = "CLIP (zero-shot)") -> str:
    """At one ε, under the table's first attack: the most robust fine-tuned method, the one that keeps the most
    clean accuracy, and the methods above *and* to the right of ``reference`` on the clean-vs-robust plane."""
    rows = select_attack(summary[summary["eps"] == eps]).set_index("method")
    tuned = rows.drop(index=pretrained, errors="ignore")
    if tuned.empty:
        raise ValueError(f"no fine-tuned method at {eps:g}/255 in the table")
    text = (f"At {eps:g}/255 under {rows['attack'].iloc[0]}: most robust {tuned['robust_accuracy'].idxmax()} "
            f"({tuned['robust_accuracy'].max():.1f} %), most clean accuracy kept {tuned['clean_accuracy'].idxmax()} "
            f"({tuned['clean_accuracy'].max():.1f} %).")
    if reference in tuned.index:
        values = ["clean_accuracy", "robust_accuracy"]
        ahead = [m for m in tuned.index
                 if m != reference and (tuned.loc[m, values] > tuned.loc[reference, values]).all()]
        text += f" Above and to the right of {reference}: {', '.join(ahead) or 'none'}."
    return text


def better_on_both(summary: pd.DataFrame, eps: float, *, pretrained: str = "CLIP (zero-shot)") -> str:
    """Which fine-tuned methods are above *and* to the right of which others on the clean-vs-robust plane at one
    ε (robust under the table's first attack): the only sense in which one method is better than another."""
    rows = select_attack(summary[summary["eps"] == eps]).set_index("method").drop(index=pretrained, errors="ignore")
    values = ["clean_accuracy", "robust_accuracy"]
    lines = []
    for method in rows.index:
        beaten = [other for other in rows.index
                  if other != method and (rows.loc[method, values] > rows.loc[other, values]).all()]
        if beaten:
            lines.append(f"{method} ({rows.loc[method, 'clean_accuracy']:.1f} % clean, "
                         f"{rows.loc[method, 'robust_accuracy']:.1f} % robust) is above and to the right of "
                         f"{', '.join(beaten)}")
    where = f"At {eps:g}/255 under {rows['attack'].iloc[0]}: " if len(rows) else ""
    if not lines:
        return where + "no method is above and to the right of another; each makes a different trade."
    return where + "; ".join(lines) + "."
