"""Sentences generated from result tables: what the chapters state about their own numbers.

A chapter that says "the attack moves the attention twice as far as noise" is right for the run that was
written about and wrong after the next change. The chapters print these sentences instead, computed from the
tables next to them, and the tests check each sentence against the table it describes.

Sentences that order models (above, below, most robust, pairs that change order) only order what the evidence
separates: given an evaluation table (one row per dataset, with per-image outcomes), two models are compared image
by image (:func:`zsr_lab.uncertainty.paired_difference`, McNemar's exact test at 5 % per pair) and a difference the
test does not separate is called a tie ("cannot be told apart at this sample size"). Rows evaluated on other images
are compared unpaired, from their intervals. A summary table without ``n`` carries no uncertainty: its numbers are
then ordered as they stand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .evaluate import INTERVALS, select_attack, summarize
from .uncertainty import ALPHA, TIE, Z95, paired_rows, stratified_interval


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
    images = ""
    if "n" in sweep.columns:
        images = f" ({int(sweep[sweep['eps'] == 0].groupby('dataset')['n'].first().sum()):,} images)"
    return (
        f"Mean over the {len(by_set)} sets{images}: {percent(mean[0])} % clean, {percent(mean[budgets[0]])} % at "
        f"{budgets[0]:g}/255, {percent(mean[budgets[-1]])} % at {budgets[-1]:g}/255; first below half of clean at "
        f"{first(mean)}. Per set: {per_set}."
    )


def fine_tuning_change(table: pd.DataFrame, before: str, after: str, eps: float) -> str:
    """How fine-tuning changed clean and robust accuracy (robust under the table's first attack at ``eps``),
    on average over the datasets and where it changed most: ``before`` and ``after`` are method names. With
    per-image outcomes, each average says whether a paired test separates it or calls it a tie."""
    rows = select_attack(table[(table["eps"] == eps) & (table["dataset"] != "mean")])
    grid = rows.pivot_table(index="dataset", columns="method", values=["clean_accuracy", "robust_accuracy"], sort=False)
    lines = []
    for value, label in (("clean_accuracy", "clean accuracy"), ("robust_accuracy", f"robust accuracy at {eps:g}/255")):
        change = grid[(value, after)] - grid[(value, before)]
        verdict = ""
        if f"{INTERVALS[value]}_outcomes" in table.columns:  # per-image evidence: say whether it separates
            verdict = " (a tie)" if order(table, eps, after, before, value) == 0 else " (separated)"
        lines.append(
            f"{label}: {change.mean():+.1f} points on average over {len(change)} sets{verdict}, from "
            f"{change.min():+.1f} ({change.idxmin()}) to {change.max():+.1f} ({change.idxmax()})"
        )
    ties = " A tie: " + TIE + " (paired exact test on the same images)." if "(a tie)" in "".join(lines) else ""
    return f"{after} against {before}: " + "; ".join(lines) + "." + ties


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
    clean accuracy (each with the methods the evidence cannot tell apart from it), and the methods above *and* to
    the right of ``reference`` on the clean-vs-robust plane by differences the evidence separates. Pass the
    evaluation table (one row per dataset) for paired comparisons; a ``summarize`` table is ordered as it stands."""
    rows = _at(summary, eps)
    tuned = rows.drop(index=pretrained, errors="ignore")
    if tuned.empty:
        raise ValueError(f"no fine-tuned method at {eps:g}/255 in the table")
    text = (
        f"At {eps:g}/255 under {rows['attack'].iloc[0]}: most robust "
        f"{_extreme(summary, eps, tuned, 'robust_accuracy')}, most clean accuracy kept "
        f"{_extreme(summary, eps, tuned, 'clean_accuracy')}."
    )
    if reference in tuned.index:
        ahead = [m for m in tuned.index if m != reference and _dominates(summary, eps, m, reference)]
        text += f" Above and to the right of {reference}: {', '.join(ahead) or 'none'}."
    return text


def _dominates(table, eps, a, b, attack=None) -> bool:
    """``a`` is above and to the right of ``b``: higher in both robust and clean accuracy, both separated."""
    return all(order(table, eps, a, b, value, attack=attack) == 1 for value in ("robust_accuracy", "clean_accuracy"))


def better_on_both(summary: pd.DataFrame, eps: float, *, pretrained: str = "CLIP (zero-shot)") -> str:
    """Which fine-tuned methods are above *and* to the right of which others on the clean-vs-robust plane at one
    ε (robust under the table's first attack), by differences the evidence separates: the only sense in which one
    method is better than another."""
    rows = _at(summary, eps).drop(index=pretrained, errors="ignore")
    lines = []
    for method in rows.index:
        beaten = [other for other in rows.index if other != method and _dominates(summary, eps, method, other)]
        if beaten:
            lines.append(
                f"{method} ({percent(rows.loc[method, 'clean_accuracy'])} % clean, "
                f"{percent(rows.loc[method, 'robust_accuracy'])} % robust) is above and to the right of "
                f"{', '.join(beaten)}"
            )
    where = f"At {eps:g}/255 under {rows['attack'].iloc[0]}: " if len(rows) else ""
    if not lines:
        return where + (
            "no method is above and to the right of another; each makes a different trade, or the evidence "
            "cannot tell them apart."
        )
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
    if "dataset" in summary.columns:
        summary = summarize(summary)
    rows = select_attack(summary[summary["eps"] == eps], attack).set_index("method")
    if rows.empty:
        raise ValueError(f"no rows at {eps:g}/255 in the table")
    return rows


def order(table: pd.DataFrame, eps: float, a: str, b: str, value: str = "robust_accuracy", *, attack=None) -> int:
    """+1 if method ``a`` is higher than ``b`` in ``value`` (mean over the sets, at ``eps`` under ``attack``, the
    table's first attack by default) by a difference the evidence separates, −1 if lower, 0 if they cannot be told
    apart.

    Paired on the same images where both have per-image outcomes (exact McNemar test at 5 %); otherwise unpaired
    from the sets' sizes (a z-test on the stratified standard errors); without sizes, the plain sign."""
    if "dataset" not in table.columns:
        rows = _at(table, eps, attack)
        return int(np.sign(rows.loc[a, value] - rows.loc[b, value]))
    rows = select_attack(table[(table["eps"] == eps) & (table["dataset"] != "mean")], attack)
    return _order_rows(rows[rows["method"] == a], rows[rows["method"] == b], value, (a, b))


def order_attacks(table: pd.DataFrame, eps: float, method: str, first: str, second: str) -> int:
    """Like :func:`order`, for one method under two attacks on the same images: +1 if ``first`` leaves a higher
    robust accuracy than ``second`` by a difference the evidence separates, −1 if lower, 0 for a tie."""
    if "dataset" not in table.columns:
        higher = _at(table, eps, first).loc[method, "robust_accuracy"]
        return int(np.sign(higher - _at(table, eps, second).loc[method, "robust_accuracy"]))
    rows = table[(table["eps"] == eps) & (table["dataset"] != "mean") & (table["method"] == method)]
    return _order_rows(
        rows[rows["attack"] == first], rows[rows["attack"] == second], "robust_accuracy", (first, second)
    )


def _order_rows(first: pd.DataFrame, second: pd.DataFrame, value: str, names) -> int:
    if first.empty or second.empty:
        raise ValueError(f"no rows of {names[0] if first.empty else names[1]} to compare")
    difference = first[value].mean() - second[value].mean()
    # paired only where the rows name their images: otherwise the same images cannot be assured
    result = paired_rows(first, second, f"{INTERVALS[value]}_outcomes") if "images" in first.columns else None
    if result is not None:
        return 0 if result.tie else int(np.sign(result.difference))
    if "n" not in first.columns or first["n"].isna().any() or second["n"].isna().any():
        return int(np.sign(difference))
    errors = []
    for group in (first, second):
        _, low, high = stratified_interval(group[value].astype(float), group["n"].astype(float))
        errors.append((high - low) / (2 * Z95))
    z = difference / max(math.hypot(*errors), 1e-12)
    return 0 if math.erfc(abs(z) / math.sqrt(2)) >= ALPHA else int(np.sign(difference))


def _tied_with(table: pd.DataFrame, eps: float, best: str, others, value: str, attack=None) -> list[str]:
    return [m for m in others if m != best and order(table, eps, best, m, value, attack=attack) == 0]


def _extreme(table, eps, rows: pd.DataFrame, value: str, attack=None) -> str:
    """``name (x %)`` of the highest mean, and the methods the evidence cannot tell apart from it."""
    best = rows[value].idxmax()
    tied = _tied_with(table, eps, best, rows.index, value, attack)
    text = f"{best} ({percent(rows.loc[best, value])} %)"
    return text + (f", not told apart from {', '.join(tied)}" if tied else "")


def plane_placement(
    summary: pd.DataFrame,
    eps: float,
    *,
    reference: str = "tecoa",
    pretrained: str = "CLIP (zero-shot)",
    attack: str | None = None,
) -> str:
    """Where each fine-tuned method lands on the clean-vs-robust plane at one ε (robust under the table's first
    attack unless ``attack`` is given): its change from the pre-trained model, its place relative to ``reference``
    (a coordinate the evidence cannot separate is called level: a tie), and the extremes with the methods tied
    with them. Pass the evaluation table for paired comparisons; a ``summarize`` table is ordered as it stands."""
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
        places = "; ".join(
            _placement(
                m,
                reference,
                order(summary, eps, m, reference, "robust_accuracy", attack=attack),
                order(summary, eps, m, reference, "clean_accuracy", attack=attack),
            )
            for m in tuned.drop(index=reference).index
        )
        text += f"On the plane: {places}. "
    return text + (
        f"Most robust: {_extreme(summary, eps, tuned, 'robust_accuracy', attack)}; "
        f"most clean accuracy kept: {_extreme(summary, eps, tuned, 'clean_accuracy', attack)}."
    )


def _placement(method: str, reference: str, robust: int, clean: int) -> str:
    if robust and clean:
        return f"{method} {_QUADRANTS[(robust > 0, clean > 0)]} {reference}"
    if not robust and not clean:
        return f"{method} level with {reference} on both axes ({TIE})"
    if not robust:
        side = "to the right of" if clean > 0 else "to the left of"
        return f"{method} {side} {reference}, level in robustness ({TIE})"
    side = "above" if robust > 0 else "below"
    return f"{method} {side} {reference}, level in clean accuracy ({TIE})"


def changed_pairs(table, names, first: tuple, second: tuple) -> tuple[list, list]:
    """Pairs of methods whose order of mean robust accuracy differs between two (ε, attack) cells: those the
    evidence orders both times in opposite directions (reversed), and those whose means swap where at least one
    of the two orders is a tie (swapped within the noise)."""
    means = [_at(table, eps, attack)["robust_accuracy"] for eps, attack in (first, second)]
    reversed_, noise = [], []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if (means[0][a] - means[0][b]) * (means[1][a] - means[1][b]) >= 0:
                continue
            orders = [order(table, eps, a, b, attack=attack) for eps, attack in (first, second)]
            (reversed_ if orders[0] * orders[1] < 0 else noise).append((a, b))
    return reversed_, noise


def _pairs_text(pairs) -> str:
    return ", ".join(f"{a} / {b}" for a, b in pairs)


def attack_gap(
    summary: pd.DataFrame, eps: float, *, worst: str, single: str, pretrained: str = "CLIP (zero-shot)"
) -> str:
    """How much ``single`` (e.g. PGD-10) over-states the worst case ``worst`` at one ε, per fine-tuned method,
    and which pairs of methods the worst case puts in the other order (separated both times by the evidence),
    apart from pairs that swap within the noise."""
    gap = _at(summary, eps, single)["robust_accuracy"] - _at(summary, eps, worst)["robust_accuracy"]
    gap = gap.drop(index=pretrained, errors="ignore")
    reversed_, noise = changed_pairs(summary, list(gap.index), (eps, single), (eps, worst))
    text = (
        f"At {eps:g}/255, {single} over-states the worst case of {worst} by {percent(gap.min())} to "
        f"{percent(gap.max())} points over the {len(gap)} fine-tuned models (most for {gap.idxmax()}); the worst "
        f"case reverses the order of {len(reversed_)} pair{'s' if len(reversed_) != 1 else ''}"
        + (f" ({_pairs_text(reversed_)})" if reversed_ else "")
    )
    if noise:
        text += f"; {len(noise)} more swap within the noise ({_pairs_text(noise)}: {TIE} under one of the two)"
    return text + "."


def gap_by_budget(summary: pd.DataFrame, *, worst: str, single: str, pretrained: str = "CLIP (zero-shot)") -> str:
    """Per ε: the range over the fine-tuned methods of how much ``single`` over-states ``worst``, and how many
    pairs of methods change order (worst case) between the smallest and the largest ε: reversed (separated by the
    evidence at both) or swapped within the noise."""
    budgets = sorted(summary["eps"].unique())
    parts = []
    for eps in budgets:
        gap = _at(summary, eps, single)["robust_accuracy"] - _at(summary, eps, worst)["robust_accuracy"]
        gap = gap.drop(index=pretrained, errors="ignore")
        parts.append(f"{eps:g}/255: {percent(gap.min())} to {percent(gap.max())}")
    names = list(_at(summary, budgets[0], worst).drop(index=pretrained, errors="ignore").index)
    n = len(names)
    reversed_, noise = changed_pairs(summary, names, (budgets[0], worst), (budgets[-1], worst))
    return (
        f"Points {single} over-states the worst case, over the fine-tuned models, per budget: "
        + "; ".join(parts)
        + f". Under the worst case, {len(reversed_)} of {n * (n - 1) // 2} pairs of fine-tuned models are "
        f"separated in opposite orders at {budgets[0]:g}/255 and {budgets[-1]:g}/255"
        + (f" ({_pairs_text(reversed_)})" if reversed_ else "")
        + f"; {len(noise)} more swap within the noise."
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
    """The largest difference in robust accuracy between two attacks over the models at one ε, and for how many
    models each attack is stronger (lower accuracy) by a difference the evidence separates."""
    difference = _at(summary, eps, first)["robust_accuracy"] - _at(summary, eps, second)["robust_accuracy"]
    orders = {m: order_attacks(summary, eps, m, first, second) for m in difference.index}
    ties = sum(1 for o in orders.values() if o == 0)
    return (
        f"At {eps:g}/255, {first} and {second} differ by at most {percent(difference.abs().max())} points "
        f"({difference.abs().idxmax()}); {second} finds lower robust accuracy for "
        f"{sum(1 for o in orders.values() if o > 0)} of {len(difference)} models, {first} for "
        f"{sum(1 for o in orders.values() if o < 0)}"
        + (f"; {ties} {'is a tie' if ties == 1 else 'are ties'} ({TIE})" if ties else "")
        + "."
    )


def curve_against(summary: pd.DataFrame, method: str, reference: str, *, attack: str | None = None) -> str:
    """``method`` minus ``reference`` in mean robust accuracy at each ε (under the first attack unless given),
    and in clean accuracy; a difference the evidence cannot separate is marked as a tie."""
    budgets = sorted(summary["eps"].unique())
    robust = {eps: _at(summary, eps, attack)["robust_accuracy"] for eps in budgets}

    def mark(eps, value):
        return "" if order(summary, eps, method, reference, value, attack=attack) else " (tie)"

    parts = [
        f"{eps:g}/255 {points(robust[eps][method] - robust[eps][reference])}{mark(eps, 'robust_accuracy')}"
        for eps in budgets
    ]
    first = _at(summary, budgets[0], attack)
    clean = first.loc[method, "clean_accuracy"] - first.loc[reference, "clean_accuracy"]
    clean_mark = mark(budgets[0], "clean_accuracy")
    ties = clean_mark or any(part.endswith(" (tie)") for part in parts)
    return (
        f"{method} minus {reference} under {first['attack'].iloc[0]}, robust accuracy in points: "
        + ", ".join(parts)
        + f"; clean accuracy {points(clean)} points{clean_mark}."
        + (f" A tie: {TIE}." if ties else "")
    )


def lead_under_the_suite(summary: pd.DataFrame, method: str, reference: str, *, suite: str, single: str) -> str:
    """Whether ``method``'s robust lead over ``reference`` survives the worst case: at each ε, the lead under the
    ``single`` attack and under the ``suite`` (mean over the sets), and the largest budget's verdict — the lead
    holds, or the suite takes part or all of it back."""
    budgets = sorted(summary["eps"].unique())
    leads = {
        eps: {
            name: _at(summary, eps, name)["robust_accuracy"][method]
            - _at(summary, eps, name)["robust_accuracy"][reference]
            for name in (single, suite)
        }
        for eps in budgets
    }
    parts = [f"{eps:g}/255 {points(lead[single])} → {points(lead[suite])}" for eps, lead in leads.items()]
    last = budgets[-1]
    before, after = (round(float(leads[last][name]), 1) for name in (single, suite))
    if before <= 0:
        verdict = f"at {last:g}/255 {method} has no lead under {single} to take back"
    elif after >= before:
        verdict = f"at {last:g}/255 the suite takes none of the lead back"
    elif after > 0:
        verdict = f"at {last:g}/255 the suite takes back {before - after:.1f} of its {before:.1f} points"
    else:
        verdict = f"at {last:g}/255 the suite takes the whole lead back"
    return (
        f"{method}'s robust lead over {reference} in points, {single} → {suite}: " + ", ".join(parts) + f"; {verdict}."
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
    its largest value (a :func:`zsr_lab.sensitivity` table), between the accuracies as
    :func:`zsr_lab.sensitivity_table` shows them (one decimal), so that the sentence and the table agree."""
    rows = select_attack(sweep[sweep["eps"] == eps]).round({"clean_accuracy": 1, "robust_accuracy": 1})
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
