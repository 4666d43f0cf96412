"""How uncertain an accuracy is, and whether two models can be told apart.

An accuracy measured on n images is a binomial proportion: at n = 200 and 30 % its 95 % interval is about ±6
points, and the mean over four such sets about ±3. This module gives every number its interval and compares models
on the same images, where the noise is much smaller: only the images on which the two models disagree count.

- :func:`wilson_interval`: one proportion (the Wilson score interval; sound near 0 % and 100 % and at n ≈ 100).
- :func:`stratified_interval`: the plain mean over datasets, each dataset a stratum with its own n.
- :func:`paired_difference` / :func:`compare`: two models on the same images: the difference with its paired
  interval (per set, then the mean over sets as strata) and McNemar's exact test on the discordant images.
- :func:`rank_groups`: many models: pairwise paired tests with Holm's correction; models no test separates
  share a rank.
- :func:`unpaired_difference`: two published numbers, which come without per-image data.
- :func:`images_needed`: how many images a paired test needs to separate a given difference.

Per-image outcomes travel in result rows as bitmaps (:func:`encode_outcomes`), so any two tables evaluated on the
same images can be compared after the fact.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import pandas as pd

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
ALPHA = 0.05
TIE = "cannot be told apart at this sample size"


def wilson_interval(successes, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of ``successes`` out of ``n``, in percent (element-wise on arrays).

    Examples::
        >>> wilson_interval(60, 200)   # 30 % of 200 images
        (23.9..., 36.7...)
    """
    x, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    if np.any(n <= 0) or np.any(x < 0) or np.any(x > n):
        raise ValueError(f"need 0 ≤ successes ≤ n and n > 0, got {successes} of {n}")
    p = x / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    low, high = 100 * np.clip(centre - half, 0, 1), 100 * np.clip(centre + half, 0, 1)
    return (float(low), float(high)) if low.ndim == 0 else (low, high)


def stratified_interval(percent: Sequence[float], n: Sequence[int], z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high) of the plain mean over datasets, in percent: each dataset a stratum, so the variance is
    Σ_d p_d(1 − p_d)/n_d / D². Each p_d is taken at the Wilson centre, so a set at 0 % or 100 % still carries its
    uncertainty instead of none."""
    p, n = np.asarray(percent, dtype=float) / 100, np.asarray(n, dtype=float)
    if len(p) == 0 or len(p) != len(n) or np.any(n <= 0):
        raise ValueError(f"need one positive n per dataset, got {len(p)} accuracies and n = {list(n)}")
    adjusted = (p * n + z**2 / 2) / (n + z**2)
    half = z * math.sqrt(float(np.sum(adjusted * (1 - adjusted) / n))) / len(p)
    mean = float(np.mean(np.asarray(percent, dtype=float)))  # the plain mean, exactly as the table averages it
    return mean, max(mean - 100 * half, 0.0), min(mean + 100 * half, 100.0)


def unpaired_difference(a: float, b: float, n_per_set, n_sets: int | None = None, z: float = Z95):
    """(difference, low, high) in points between two means over datasets, treated as independent samples (all one
    can do for published numbers, which come without per-image data).

    Arguments:
        a, b: the two means (%).
        n_per_set: images per set: one number (with ``n_sets`` sets) or one per set.
        n_sets: the number of sets when ``n_per_set`` is one number (default 1).

    The variance of each mean is Σ_d p(1 − p)/n_d / D² with its own mean p for every set (the per-set values are
    not published)."""
    sizes = np.full(n_sets or 1, float(n_per_set)) if np.ndim(n_per_set) == 0 else np.asarray(n_per_set, float)
    p, q = a / 100, b / 100
    var = (p * (1 - p) + q * (1 - q)) * float(np.sum(1 / sizes)) / len(sizes) ** 2
    half = 100 * z * math.sqrt(var)
    return a - b, a - b - half, a - b + half


def images_needed(difference: float, discordant: float, *, alpha: float = ALPHA, power: float = 0.8) -> int:
    """Images two models must both be evaluated on for a paired test (McNemar, two-sided ``alpha``) to separate a
    true difference of ``difference`` points with probability ``power``, when a share ``discordant`` (in %) of the
    images is kept by one model only (Connor's approximation, 1987). For a mean over D sets of equal size, the
    images are spread over the sets: each holds a D-th.

    Examples::
        >>> images_needed(1.0, 5.0)   # 1 point apart, 5 % of the images discordant
        3923
    """
    if not 0 < abs(difference) <= discordant <= 100:
        raise ValueError(
            f"need 0 < |difference| ≤ discordant share ≤ 100 (in %), got {difference} and {discordant}: two models "
            f"cannot differ by more than the images on which they disagree"
        )
    normal = NormalDist()
    delta, psi = abs(difference) / 100, discordant / 100
    root = normal.inv_cdf(1 - alpha / 2) * math.sqrt(psi) + normal.inv_cdf(power) * math.sqrt(psi - delta**2)
    return math.ceil(root**2 / delta**2)


# ---- per-image outcomes --------------------------------------------------------------------------------------


def encode_outcomes(outcomes) -> str:
    """A boolean vector (one entry per image, in the row's image order) as a hex bitmap."""
    bits = np.asarray(outcomes, dtype=bool)
    return np.packbits(bits).tobytes().hex()


def decode_outcomes(text: str, n: int) -> np.ndarray:
    """The boolean vector of :func:`encode_outcomes` (``n`` images)."""
    if not isinstance(text, str) or len(text) != 2 * math.ceil(n / 8):
        raise ValueError(f"a bitmap of {n} images has {2 * math.ceil(n / 8)} hex digits, got {text!r:.40}")
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n].astype(bool)


def images_digest(dataset: str, split: str, split_size: int, indices: Sequence[int]) -> str:
    """What identifies a row's images: the dataset, its split and the indices drawn from it."""
    text = f"{dataset}/{split}/{split_size}/" + ",".join(str(int(i)) for i in indices)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# ---- paired comparisons ----------------------------------------------------------------------------------------


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: under 'no difference', each discordant image is a fair coin."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**discordant)))


@dataclass(frozen=True)
class PairedDifference:
    """Model A minus model B on the same images, in points.

    Attributes:
        difference, low, high: the difference of the mean over sets, and its 95 % paired interval.
        only_a, only_b: discordant images (kept by A only, by B only), summed over sets.
        n: images compared. p_value: McNemar's exact test on the discordant images.
        verdict: ``"A higher"``, ``"B higher"`` or :data:`TIE`.
    """

    difference: float
    low: float
    high: float
    only_a: int
    only_b: int
    n: int
    p_value: float

    @property
    def verdict(self) -> str:
        if self.p_value >= ALPHA:
            return TIE
        return "A higher" if self.difference > 0 else "B higher"

    @property
    def tie(self) -> bool:
        return self.p_value >= ALPHA


def paired_difference(sets: Sequence[tuple[np.ndarray, np.ndarray]], z: float = Z95) -> PairedDifference:
    """A − B over datasets, from per-image outcomes ``[(a_set, b_set), ...]`` (booleans on the same images).

    Per set: d = (b − c)/n with variance (b + c − (b − c)²/n)/n², b and c the images only A and only B keep; the
    mean over D sets has variance Σ var_d / D². The exact test pools the discordant images of every set."""
    diffs, variances, only_a, only_b, n = [], [], 0, 0, 0
    for a, b in sets:
        a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
        if a.shape != b.shape or len(a) == 0:
            raise ValueError(f"paired outcomes need the same images: got {len(a)} and {len(b)}")
        size, wins, losses = len(a), int((a & ~b).sum()), int((~a & b).sum())
        diffs.append((wins - losses) / size)
        variances.append((wins + losses - (wins - losses) ** 2 / size) / size**2)
        only_a, only_b, n = only_a + wins, only_b + losses, n + size
    d = float(np.mean(diffs))
    half = z * math.sqrt(sum(variances)) / len(diffs)
    return PairedDifference(
        100 * d, 100 * (d - half), 100 * (d + half), only_a, only_b, n, mcnemar_exact(only_a, only_b)
    )


def paired_rows(first: pd.DataFrame, second: pd.DataFrame, column: str) -> PairedDifference | None:
    """The paired difference first − second from two sets of per-dataset rows (one row per dataset each) and
    their outcome bitmaps in ``column``; ``None`` when they cannot be paired (a dataset missing on one side, no
    outcomes, or other images)."""
    pairs = first.merge(second, on="dataset", suffixes=("_a", "_b"))
    if (
        column not in first.columns
        or column not in second.columns
        or pairs.empty
        or not len(pairs) == len(first) == len(second)
        or pairs[[f"{column}_a", f"{column}_b"]].isna().any().any()
        or ("images_a" in pairs.columns and (pairs["images_a"] != pairs["images_b"]).any())
    ):
        return None
    return paired_difference(
        [
            (decode_outcomes(r[f"{column}_a"], int(r["n_a"])), decode_outcomes(r[f"{column}_b"], int(r["n_b"])))
            for _, r in pairs.iterrows()
        ]
    )


OUTCOME_COLUMNS = {"clean": "clean_outcomes", "robust": "robust_outcomes", "worst_case": "worst_case_outcomes"}
PROTOCOL_FIELDS = ("suite", "template", "precision", "seed", "stopping", "model")


class NotComparableError(ValueError):
    """Two tables cannot be compared image by image (different images, protocols, or no per-image outcomes)."""


def _pairable(table: pd.DataFrame, name: str) -> pd.DataFrame:
    rows = table[table["dataset"] != "mean"] if "dataset" in table.columns else table
    missing = [c for c in ("images", "n", "dataset", "eps", "attack") if c not in rows.columns]
    if missing or rows.empty:
        raise NotComparableError(
            f"{name} has no per-image outcomes (missing {', '.join(missing) or 'rows'}): evaluate the model with "
            f"zsr_lab.evaluate_robustness (results.jsonl of format 3 or later) to compare it image by image"
        )
    return rows


def compare(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    attack: str | None = None,
    eps: float | None = None,
    names: tuple[str, str] = ("A", "B"),
) -> pd.DataFrame:
    """Model A against model B on the same images: the paired difference of clean and worst-case accuracy.

    Arguments:
        a, b: evaluation tables of two models (:func:`zsr_lab.evaluate_robustness`, or their ``results.csv``
            read back), evaluated under the same protocol on the same images.
        attack: the suite to compare (default: every suite both tables hold).
        eps: the budget to compare (default: every budget both tables hold).
        names: how the two models are called in the table.

    Returns:
        One row per suite × ε × measure (clean, robust: the suite's own worst case, and worst_case: the worst
        case accumulated over every attack stored for the images, where present): A's and B's mean over datasets,
        the difference A − B with its 95 % paired interval, the discordant images, McNemar's exact p and a verdict
        that says :data:`TIE` when the test does not separate them.

    Raises:
        NotComparableError: the tables share no suite and ε, were evaluated on different images or under
            different protocols, or lack per-image outcomes.
    """
    rows_a, rows_b = _pairable(a, names[0]), _pairable(b, names[1])
    keys = ["attack", "eps"]
    pairs = rows_a.merge(rows_b, on=[*keys, "dataset"], suffixes=("_a", "_b"))
    if attack is not None:
        pairs = pairs[pairs["attack"] == attack]
    if eps is not None:
        pairs = pairs[pairs["eps"] == float(eps)]
    if pairs.empty:
        raise NotComparableError(
            f"{names[0]} and {names[1]} share no dataset × suite × ε"
            + (f" for attack={attack!r}, eps={eps!r}" if attack is not None or eps is not None else "")
            + f": {names[0]} has {sorted(set(zip(rows_a.attack, rows_a.eps)))}, "
            f"{names[1]} has {sorted(set(zip(rows_b.attack, rows_b.eps)))}"
        )
    _check_same_images(pairs, rows_a, rows_b, names)
    results = []
    for (suite, budget), group in pairs.groupby(keys, sort=False):
        for measure, column in OUTCOME_COLUMNS.items():
            if f"{column}_a" not in group.columns or group[[f"{column}_a", f"{column}_b"]].isna().any().any():
                continue
            sets = [
                (decode_outcomes(r[f"{column}_a"], int(r["n_a"])), decode_outcomes(r[f"{column}_b"], int(r["n_b"])))
                for _, r in group.iterrows()
            ]
            diff = paired_difference(sets)
            results.append(
                {
                    "attack": suite,
                    "eps": budget,
                    "measure": measure,
                    "datasets": len(sets),
                    "n": diff.n,
                    names[0]: float(np.mean([s[0].mean() for s in sets]) * 100),
                    names[1]: float(np.mean([s[1].mean() for s in sets]) * 100),
                    "difference": diff.difference,
                    "low": diff.low,
                    "high": diff.high,
                    f"only_{names[0]}": diff.only_a,
                    f"only_{names[1]}": diff.only_b,
                    "p_value": diff.p_value,
                    "verdict": TIE if diff.tie else f"{names[0] if diff.difference > 0 else names[1]} higher",
                }
            )
    return pd.DataFrame(results)


def _check_same_images(pairs: pd.DataFrame, rows_a, rows_b, names) -> None:
    differ = pairs[pairs["images_a"] != pairs["images_b"]]
    if len(differ):
        raise NotComparableError(
            f"{names[0]} and {names[1]} were evaluated on different images of "
            f"{', '.join(sorted(set(differ['dataset'])))} (other n_examples, seed or split): evaluate both under "
            f"the same Protocol to compare them image by image"
        )
    for field in PROTOCOL_FIELDS:
        if f"{field}_a" in pairs.columns and f"{field}_b" in pairs.columns:
            left, right = pairs[f"{field}_a"].astype(str), pairs[f"{field}_b"].astype(str)
            if (left != right).any():
                i = (left != right).idxmax()
                raise NotComparableError(
                    f"{names[0]} and {names[1]} differ in {field} ({left[i]!r} vs {right[i]!r}) on "
                    f"{pairs.loc[i, 'dataset']}: evaluate both under the same Protocol"
                )


def rank_groups(
    tables: dict[str, pd.DataFrame] | pd.DataFrame, *, attack: str | None = None, eps: float, measure: str = "robust"
) -> pd.DataFrame:
    """Rank many models on the same images, sharing ranks where the evidence cannot order them.

    Every pair is compared (:func:`compare`); Holm's correction keeps the chance of any false separation at 5 %.
    A model's rank is 1 + the number of models that are significantly better than it, so models that no test
    separates share a rank.

    Arguments:
        tables: model name → its evaluation table, or one table with a ``method`` column.
        attack: the suite (default: the first table's first).
        eps: the budget. measure: ``"robust"``, ``"clean"`` or ``"worst_case"``.

    Returns:
        One row per model, best first: its mean, rank, the models it is significantly above and below.
    """
    if isinstance(tables, pd.DataFrame):
        tables = {name: rows for name, rows in tables.groupby("method", sort=False)}
    if attack is None:
        attack = next(iter(tables.values()))["attack"].iloc[0]
    names = list(tables)
    if len(names) < 2:
        raise ValueError("rank_groups needs at least two models")
    tests = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            row = compare(tables[first], tables[second], attack=attack, eps=eps, names=("A", "B"))
            row = row[row["measure"] == measure]
            if row.empty:
                raise NotComparableError(f"no {measure} outcomes to compare {first} and {second}")
            r = row.iloc[0]
            tests.append((first, second, r["difference"], r["p_value"], r["A"], r["B"]))
    means = {}
    for first, second, _, _, mean_a, mean_b in tests:
        means[first], means[second] = mean_a, mean_b
    order = sorted(range(len(tests)), key=lambda k: tests[k][3])
    above = {n: set() for n in names}
    m = len(tests)
    for position, k in enumerate(order):  # Holm: stop at the first test that fails its threshold
        first, second, difference, p, _, _ = tests[k]
        if p > ALPHA / (m - position):
            break
        better, worse = (first, second) if difference > 0 else (second, first)
        above[better].add(worse)
    below = {n: {other for other in names if n in above[other]} for n in names}
    table = pd.DataFrame(
        {
            "model": names,
            measure: [means[n] for n in names],
            "rank": [1 + len(below[n]) for n in names],
            "above": [", ".join(sorted(above[n])) for n in names],
            "below": [", ".join(sorted(below[n])) for n in names],
        }
    )
    return table.sort_values(["rank", measure], ascending=[True, False]).reset_index(drop=True)
