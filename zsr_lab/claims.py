"""Sentences generated from result tables: what the chapters state about their own numbers.

A chapter that says "the attack moves the attention twice as far as noise" is right for the run that was
written about and wrong after the next change. The chapters print these sentences instead, computed from the
tables next to them, and the tests check each sentence against the table it describes.
"""

from __future__ import annotations

import numpy as np
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
    return (
        f"Mean over the {len(by_set)} sets: {mean[0]:.1f} % clean, {mean[budgets[0]]:.1f} % at "
        f"{budgets[0]:g}/255, {mean[budgets[-1]]:.1f} % at {budgets[-1]:g}/255; first below half of clean at "
        f"{first(mean)}. Per set: {per_set}."
    )


def fine_tuning_change(table: pd.DataFrame, before: str, after: str, eps: float) -> str:
    """How fine-tuning changed clean and robust accuracy (robust under the table's first attack at ``eps``),
    on average over the datasets and where it changed most: ``before`` and ``after`` are method names."""
    rows = select_attack(table[(table["eps"] == eps) & (table["dataset"] != "mean")])
    grid = rows.pivot_table(index="dataset", columns="method", values=["clean_accuracy", "robust_accuracy"], sort=False)
    lines = []
    for value, label in (("clean_accuracy", "clean accuracy"), ("robust_accuracy", f"robust accuracy at {eps:g}/255")):
        change = grid[(value, after)] - grid[(value, before)]
        lines.append(
            f"{label}: {change.mean():+.1f} points on average over {len(change)} sets, from "
            f"{change.min():+.1f} ({change.idxmin()}) to {change.max():+.1f} ({change.idxmax()})"
        )
    return f"{after} against {before}: " + "; ".join(lines) + "."


def drift_ratio(drift: pd.DataFrame) -> str:
    """How much further the attack moves the attention than random noise of the same size, per dataset (a
    :func:`zsr_lab.measure_attention_drift` table of one model)."""
    ratio = drift["adversarial"] / drift["random_noise"]
    parts = [f"{r:.1f}× on {name}" for name, r in zip(drift["dataset"], ratio)]
    verdict = (
        "further than noise on every set"
        if (ratio > 1).all()
        else f"further than noise on {int((ratio > 1).sum())} of {len(ratio)} sets"
    )
    return f"The attack moves the attention {verdict}: " + ", ".join(parts) + "."


def tradeoff_extremes(
    summary: pd.DataFrame, eps: float, *, reference: str = "tecoa", pretrained: str = "CLIP (zero-shot)"
) -> str:
    """At one ε, under the table's first attack: the most robust fine-tuned method, the one that keeps the most
    clean accuracy, and the methods above *and* to the right of ``reference`` on the clean-vs-robust plane."""
    rows = select_attack(summary[summary["eps"] == eps]).set_index("method")
    tuned = rows.drop(index=pretrained, errors="ignore")
    if tuned.empty:
        raise ValueError(f"no fine-tuned method at {eps:g}/255 in the table")
    text = (
        f"At {eps:g}/255 under {rows['attack'].iloc[0]}: most robust {tuned['robust_accuracy'].idxmax()} "
        f"({tuned['robust_accuracy'].max():.1f} %), most clean accuracy kept {tuned['clean_accuracy'].idxmax()} "
        f"({tuned['clean_accuracy'].max():.1f} %)."
    )
    if reference in tuned.index:
        values = ["clean_accuracy", "robust_accuracy"]
        ahead = [
            m for m in tuned.index if m != reference and (tuned.loc[m, values] > tuned.loc[reference, values]).all()
        ]
        text += f" Above and to the right of {reference}: {', '.join(ahead) or 'none'}."
    return text


def better_on_both(summary: pd.DataFrame, eps: float, *, pretrained: str = "CLIP (zero-shot)") -> str:
    """Which fine-tuned methods are above *and* to the right of which others on the clean-vs-robust plane at one
    ε (robust under the table's first attack): the only sense in which one method is better than another."""
    rows = select_attack(summary[summary["eps"] == eps]).set_index("method").drop(index=pretrained, errors="ignore")
    values = ["clean_accuracy", "robust_accuracy"]
    lines = []
    for method in rows.index:
        beaten = [
            other
            for other in rows.index
            if other != method and (rows.loc[method, values] > rows.loc[other, values]).all()
        ]
        if beaten:
            lines.append(
                f"{method} ({rows.loc[method, 'clean_accuracy']:.1f} % clean, "
                f"{rows.loc[method, 'robust_accuracy']:.1f} % robust) is above and to the right of "
                f"{', '.join(beaten)}"
            )
    where = f"At {eps:g}/255 under {rows['attack'].iloc[0]}: " if len(rows) else ""
    if not lines:
        return where + "no method is above and to the right of another; each makes a different trade."
    return where + "; ".join(lines) + "."


def percent(value: float) -> str:
    """One decimal, rounded as the book's tables round (``DataFrame.round(1)``), so that a sentence or a figure
    title and the table beside it never differ in the last digit."""
    return f"{float(np.round(value, 1)):.1f}"


def points(value: float) -> str:
    """A signed difference in percentage points, rounded like :func:`percent`."""
    rounded = float(np.round(value, 1))
    return f"{rounded:+.1f}" if rounded != 0 else "0.0"


_QUADRANTS = {
    (True, True): "above and to the right of",
    (True, False): "above and to the left of",
    (False, True): "below and to the right of",
    (False, False): "below and to the left of",
}


def _at(summary: pd.DataFrame, eps: float, attack: str | None = None) -> pd.DataFrame:
    rows = select_attack(summary[summary["eps"] == eps], attack).set_index("method")
    if rows.empty:
        raise ValueError(f"no rows at {eps:g}/255 in the table")
    return rows


def plane_placement(
    summary: pd.DataFrame,
    eps: float,
    *,
    reference: str = "tecoa",
    pretrained: str = "CLIP (zero-shot)",
    attack: str | None = None,
) -> str:
    """Where each fine-tuned method lands on the clean-vs-robust plane at one ε (a ``summarize`` table; robust
    under its first attack unless ``attack`` is given): its change from the pre-trained model, its quadrant
    relative to ``reference``, and the extremes."""
    rows = _at(summary, eps, attack)
    tuned = rows.drop(index=pretrained, errors="ignore")
    text = f"At {eps:g}/255 under {rows['attack'].iloc[0]} (means over the held-out sets): "
    if pretrained in rows.index:
        base = rows.loc[pretrained]
        changes = ", ".join(
            f"{m} {points(r['clean_accuracy'] - base['clean_accuracy'])} clean / "
            f"{points(r['robust_accuracy'] - base['robust_accuracy'])} robust"
            for m, r in tuned.iterrows()
        )
        text += (
            f"from the pre-trained model's {percent(base['clean_accuracy'])} % clean and "
            f"{percent(base['robust_accuracy'])} % robust, {changes} points. "
        )
    if reference in tuned.index and len(tuned) > 1:
        ref = tuned.loc[reference]
        quadrant = {
            m: _QUADRANTS[(r["robust_accuracy"] > ref["robust_accuracy"], r["clean_accuracy"] > ref["clean_accuracy"])]
            for m, r in tuned.drop(index=reference).iterrows()
        }
        places = "; ".join(f"{m} {where} {reference}" for m, where in quadrant.items())
        text += f"On the plane: {places}. "
    return text + (
        f"Most robust: {tuned['robust_accuracy'].idxmax()} ({percent(tuned['robust_accuracy'].max())} %); "
        f"most clean accuracy kept: {tuned['clean_accuracy'].idxmax()} "
        f"({percent(tuned['clean_accuracy'].max())} %)."
    )


def _swapped_pairs(first: pd.Series, second: pd.Series) -> list[tuple[str, str]]:
    names = list(first.index)
    return [
        (a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if (first[a] - first[b]) * (second[a] - second[b]) < 0
    ]


def attack_gap(
    summary: pd.DataFrame, eps: float, *, worst: str, single: str, pretrained: str = "CLIP (zero-shot)"
) -> str:
    """How much ``single`` (e.g. PGD-10) over-states the worst case ``worst`` at one ε, per fine-tuned method,
    and which pairs of methods the worst case puts in the other order."""
    gap = _at(summary, eps, single)["robust_accuracy"] - _at(summary, eps, worst)["robust_accuracy"]
    gap = gap.drop(index=pretrained, errors="ignore")
    swaps = _swapped_pairs(
        _at(summary, eps, single)["robust_accuracy"].drop(index=pretrained, errors="ignore"),
        _at(summary, eps, worst)["robust_accuracy"].drop(index=pretrained, errors="ignore"),
    )
    return (
        f"At {eps:g}/255, {single} over-states the worst case of {worst} by {percent(gap.min())} to "
        f"{percent(gap.max())} points over the {len(gap)} fine-tuned models (most for {gap.idxmax()}); the worst "
        f"case reverses the order of {len(swaps)} pair{'s' if len(swaps) != 1 else ''}"
        + (f" ({', '.join(f'{a} / {b}' for a, b in swaps)})." if swaps else ".")
    )


def gap_by_budget(summary: pd.DataFrame, *, worst: str, single: str, pretrained: str = "CLIP (zero-shot)") -> str:
    """Per ε: the range over the fine-tuned methods of how much ``single`` over-states ``worst``, and how many
    pairs of methods change order (worst case) between the smallest and the largest ε."""
    budgets = sorted(summary["eps"].unique())
    parts = []
    for eps in budgets:
        gap = _at(summary, eps, single)["robust_accuracy"] - _at(summary, eps, worst)["robust_accuracy"]
        gap = gap.drop(index=pretrained, errors="ignore")
        parts.append(f"{eps:g}/255: {percent(gap.min())} to {percent(gap.max())}")
    low, high = (
        _at(summary, e, worst)["robust_accuracy"].drop(index=pretrained, errors="ignore")
        for e in (budgets[0], budgets[-1])
    )
    n = len(low)
    swaps = _swapped_pairs(low, high)
    return (
        f"Points {single} over-states the worst case, over the fine-tuned models, per budget: "
        + "; ".join(parts)
        + f". Under the worst case, {len(swaps)} of {n * (n - 1) // 2} pairs of fine-tuned "
        f"models change order between {budgets[0]:g}/255 and {budgets[-1]:g}/255."
    )


def dataset_changes(table: pd.DataFrame, eps: float, *, pretrained: str = "CLIP (zero-shot)") -> str:
    """Per held-out set, the mean over the fine-tuned methods of the change in clean accuracy and in robust
    accuracy (first attack, at ``eps``) from the pre-trained model; the set that loses the most clean accuracy."""
    rows = select_attack(table[(table["eps"] == eps) & (table["dataset"] != "mean")])
    grid = rows.pivot_table(index="dataset", columns="method", values=["clean_accuracy", "robust_accuracy"], sort=False)
    methods = [m for m in dict.fromkeys(rows["method"]) if m != pretrained]
    clean = grid["clean_accuracy"][methods].sub(grid["clean_accuracy"][pretrained], axis=0).mean(axis=1)
    robust = grid["robust_accuracy"][methods].sub(grid["robust_accuracy"][pretrained], axis=0).mean(axis=1)
    per_set = "; ".join(f"{name} {points(clean[name])} clean, {points(robust[name])} robust" for name in clean.index)
    return (
        f"Change from the pre-trained model, mean over the {len(methods)} fine-tuned models, robust at "
        f"{eps:g}/255: {per_set}. Most clean accuracy lost on {clean.idxmin()}; least on {clean.idxmax()}."
    )


def relative_cost(cost: pd.DataFrame, *, reference: str = "tecoa") -> str:
    """The training throughput of each method relative to ``reference``, fastest first (a table indexed by
    method with an ``images/s`` column)."""
    relative = (cost["images/s"] / cost.loc[reference, "images/s"]).sort_values(ascending=False)
    return (
        f"Training throughput relative to {reference}, fastest first: "
        + ", ".join(f"{m} {r:.2f}×" for m, r in relative.items())
        + "."
    )


def attack_agreement(summary: pd.DataFrame, eps: float, first: str, second: str) -> str:
    """The largest difference in robust accuracy between two attacks over the models at one ε, and which of the
    two is stronger (lower accuracy) for how many models."""
    difference = _at(summary, eps, first)["robust_accuracy"] - _at(summary, eps, second)["robust_accuracy"]
    return (
        f"At {eps:g}/255, {first} and {second} differ by at most {percent(difference.abs().max())} points "
        f"({difference.abs().idxmax()}); {second} finds lower robust accuracy for {int((difference > 0).sum())} "
        f"of {len(difference)} models, {first} for {int((difference < 0).sum())}."
    )


def curve_against(summary: pd.DataFrame, method: str, reference: str, *, attack: str | None = None) -> str:
    """``method`` minus ``reference`` in mean robust accuracy at each ε (under the first attack unless given),
    and in clean accuracy."""
    budgets = sorted(summary["eps"].unique())
    robust = {eps: _at(summary, eps, attack)["robust_accuracy"] for eps in budgets}
    parts = [f"{eps:g}/255 {points(robust[eps][method] - robust[eps][reference])}" for eps in budgets]
    first = _at(summary, budgets[0], attack)
    clean = first.loc[method, "clean_accuracy"] - first.loc[reference, "clean_accuracy"]
    return (
        f"{method} minus {reference} under {first['attack'].iloc[0]}, robust accuracy in points: "
        + ", ".join(parts)
        + f"; clean accuracy {points(clean)} points."
    )


def drift_summary(drift: pd.DataFrame) -> str:
    """Per model, the attention drift from the pre-trained model's clean map, mean over the sets: on clean
    images, under noise and under the model's own attack, and what the attack adds to the clean drift (a
    :func:`zsr_lab.measure_attention_drift` table of several models)."""
    mean = drift.groupby("model", sort=False)[["clean", "random_noise", "adversarial"]].mean()
    added = mean["adversarial"] - mean["clean"]
    parts = [
        f"{m}: {r['clean']:.3f} clean, {r['random_noise']:.3f} noise, {r['adversarial']:.3f} attacked "
        f"(+{added[m]:.3f} from the attack)"
        for m, r in mean.iterrows()
    ]
    return (
        f"Attention drift, mean over the {drift['dataset'].nunique()} sets — "
        + "; ".join(parts)
        + f". Furthest on clean images: {mean['clean'].idxmax()}; closest under attack: "
        f"{mean['adversarial'].idxmin()}; least added by the attack: {added.idxmin()}."
    )


def localisation_summary(localisation: pd.DataFrame) -> str:
    """Per set: each model's lift on clean images, under noise and under its own attack, its accuracy under
    that attack, and the model whose map sits most on the object (a
    :func:`zsr_lab.measure_attention_localisation` table)."""
    sentences = []
    for name, rows in localisation.groupby("dataset", sort=False):
        lift = rows.pivot_table(index="model", columns="condition", values="lift", sort=False)
        accuracy = rows.pivot_table(index="model", columns="condition", values="accuracy", sort=False)
        parts = [
            f"{m} {r['clean']:.2f} / {r['random_noise']:.2f} / {r['adversarial']:.2f} "
            f"({percent(accuracy.loc[m, 'adversarial'])} % right under attack)"
            for m, r in lift.iterrows()
        ]
        sentences.append(
            f"{name}, lift clean / noise / attacked: "
            + "; ".join(parts)
            + f"; highest clean lift {lift['clean'].idxmax()}, highest attacked lift "
            f"{lift['adversarial'].idxmax()}."
        )
    return " ".join(sentences)


def sensitivity_slopes(sweep: pd.DataFrame, eps: float) -> str:
    """For each swept option, the change in mean clean and robust accuracy (first attack) from its smallest to
    its largest value (a :func:`zsr_lab.sensitivity` table)."""
    rows = select_attack(sweep[sweep["eps"] == eps])
    parts = []
    for option, points_of in rows.groupby("option", sort=False):
        points_of = points_of.sort_values("value")
        low, high = points_of.iloc[0], points_of.iloc[-1]
        parts.append(
            f"{option} from {low['value']:g} to {high['value']:g}: "
            f"{points(high['clean_accuracy'] - low['clean_accuracy'])} clean, "
            f"{points(high['robust_accuracy'] - low['robust_accuracy'])} robust"
        )
    return f"At {eps:g}/255, in points: " + "; ".join(parts) + "."
