"""What the papers report, and loading what a user's own full-scale runs produced, as tidy tables.

Both tables have the columns of :func:`zsr_lab.summarize` (``method``, ``attack``, ``eps``, ``clean_accuracy``,
``robust_accuracy``) so they plot with the same functions as the book's own results.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .datasets import BENCHMARK_DATASETS
from .evaluate import read_results_csv
from .protocol import Protocol
from .uncertainty import TIE, unpaired_difference

# ViT-B/32 fine-tuned on Tiny-ImageNet, evaluated zero-shot on the 16-dataset protocol at 1/255, mean over the
# 16 datasets, as reported by the TGA-ZSR and Comp-TGA papers (which re-ran the baselines under it): PGD-100
# (last iterate, the whole splits) for every method; the TGA-ZSR paper also reports its model under its
# "AutoAttack" (APGD-CE + APGD-DLR, zsr_lab's papers-aa) and the CW-margin PGD. TIMA reports a different protocol
# (PGD-10, AutoAttack, larger ε), so it has no row here. No paper reports the worst case over aa on this protocol.
_HEADLINE = [  # method, attack, clean, robust, source
    ("CLIP (zero-shot)", "PGD-100", 64.42, 4.90, "yu2024tgazsr"),
    ("tecoa", "PGD-100", 45.81, 28.06, "yu2024tgazsr"),
    ("pmg_aft", "PGD-100", 46.60, 32.51, "yu2024tgazsr"),
    ("fare", "PGD-100", 59.85, 18.25, "yu2024tgazsr"),
    ("tga_zsr", "PGD-100", 56.44, 42.09, "yu2024tgazsr"),
    ("comp_tga", "PGD-100", 55.44, 44.46, "yu2026comptga"),
    ("tga_zsr", "papers-aa", 56.44, 30.86, "yu2024tgazsr"),
    ("tga_zsr", "CW-100", 56.44, 40.50, "yu2024tgazsr"),
]
TRAINING = "ViT-B/32 (OpenAI weights) fine-tuned on Tiny-ImageNet"


# Images in each of the 16 protocol splits (whole test splits, as the papers evaluate): what their PGD-100 means
# rest on. Tiny-ImageNet val, CIFAR-10/100 test, STL-10 test, SUN397 whole, Food101 test, Pets test, Flowers102 test,
# DTD test (partition 1), EuroSAT whole, FGVC-Aircraft test, ImageNet val, Caltech-101/256 whole, Cars test, PCAM test.
WHOLE_SPLIT_SIZES = dict(
    zip(
        BENCHMARK_DATASETS,
        (10_000, 10_000, 10_000, 8_000, 108_754, 25_250, 3_669, 6_149, 1_880, 27_000, 3_333, 50_000, 8_677, 30_607)
        + (8_041, 32_768),
    )
)
# The closest published call on this protocol: UCAT's re-runs of both methods under APGD-CE + APGD-DLR on 1,000
# images per set (the supplementary material's Table 16), as quoted in the book's references.
RERUNS = [("ucat", 30.58), ("tga_zsr", 30.52)]


# how a reader cites each source of these tables (the book's bibliography holds the entries under these keys)
CITATIONS = {
    "yu2024tgazsr": "Yu et al. 2024 (TGA-ZSR)",
    "yu2026comptga": "Yu et al. 2026 (Comp-TGA)",
    "lu2026ucat": "Lu et al. 2026 (UCAT)",
    "schlarmann2024fare": "Schlarmann et al. 2024 (FARE, RobustVLM)",
}


def cited(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``source`` column as a reader cites it ("Yu et al. 2024 (TGA-ZSR)"), not as citation keys;
    several keys (``"yu2024tgazsr, yu2026comptga"``) become several citations."""

    def citation(keys: str) -> str:
        return "; ".join(CITATIONS.get(key.strip(), key.strip()) for key in str(keys).split(","))

    return table.assign(source=table["source"].map(citation))


def published_differences() -> pd.DataFrame:
    """Which published differences the papers' own sample sizes can tell apart.

    Published numbers come without per-image data, so only an unpaired interval can be given (two independent
    samples; a paired one, which these numbers do not allow, would be narrower). Compared: neighbours in robust
    accuracy under each attack of :func:`reported_results` (whole splits: :data:`WHOLE_SPLIT_SIZES`), and UCAT
    against TGA-ZSR as UCAT re-ran them (``papers-aa``, 16 × 1,000 images).

    Returns:
        One row per pair: attack, higher, lower (methods), their robust accuracies, the difference with its 95 %
        unpaired interval, the images each mean rests on, and ``verdict``: ``"separated"`` or
        :data:`zsr_lab.uncertainty.TIE` (the interval holds 0).
    """
    rows = []
    sizes = list(WHOLE_SPLIT_SIZES.values())
    for attack, group in reported_results().groupby("attack", sort=False):
        ordered = group.sort_values("robust_accuracy", ascending=False)
        for (_, high), (_, low) in zip(ordered.iterrows(), ordered.iloc[1:].iterrows()):
            rows.append(
                _difference(attack, high, low, sizes, ", ".join(dict.fromkeys((high["source"], low["source"]))))
            )
    (first, a), (second, b) = RERUNS
    rows.append(
        _difference(
            "papers-aa (UCAT's re-runs)",
            {"method": first, "robust_accuracy": a},
            {"method": second, "robust_accuracy": b},
            [1000] * len(BENCHMARK_DATASETS),
            "lu2026ucat",
        )
    )
    return pd.DataFrame(rows)


def differences_table(differences: pd.DataFrame) -> pd.DataFrame:
    """A :func:`published_differences` table as a reader compares it: each pair with its two robust accuracies, the
    difference with its 95 % unpaired interval in one column (two decimals, as the papers report), the images each
    mean rests on, the verdict and the cited source, narrow enough for a page's column."""
    return pd.DataFrame(
        {
            "attack": differences["attack"],
            "higher / lower": differences["higher"] + " / " + differences["lower"],
            "robust (%)": [
                f"{a:.2f} / {b:.2f}" for a, b in zip(differences["robust (higher)"], differences["robust (lower)"])
            ],
            "difference [95 %]": [
                f"{d:.2f} [{lo:.2f}, {hi:.2f}]"
                for d, lo, hi in zip(differences["difference"], differences["low"], differences["high"])
            ],
            "images": differences["images per model"].map("{:,}".format),
            "verdict": differences["verdict"],
            "source": cited(differences)["source"],
        }
    )


def _difference(attack, high, low, sizes, source) -> dict:
    difference, lower, upper = unpaired_difference(high["robust_accuracy"], low["robust_accuracy"], sizes)
    return {
        "attack": attack,
        "higher": high["method"],
        "lower": low["method"],
        "robust (higher)": high["robust_accuracy"],
        "robust (lower)": low["robust_accuracy"],
        "difference": difference,
        "low": lower,
        "high": upper,
        "images per model": int(sum(sizes)),
        "verdict": TIE if lower <= 0 else "separated",
        "source": source,
    }


def reported_protocol(attack: str) -> Protocol:
    """The evaluation protocol of the papers' numbers under ``attack``: the 16 datasets, ε = 1/255, the whole
    splits, the last iterate of PGD and CW."""
    return Protocol(BENCHMARK_DATASETS, (attack.lower(),), (1.0,), None, stopping="last")


def reported_results() -> pd.DataFrame:
    """The papers' headline numbers (reported, not reproduced here), one row per method.

    Returns:
        Columns ``method``, ``attack`` (``"PGD-100"`` for every method, then the TGA-ZSR paper's ``"papers-aa"``
        and ``"CW-100"`` rows), ``eps`` (1.0), ``clean_accuracy``, ``robust_accuracy``, ``source`` (the citation key
        of the paper the number is taken from) and ``protocol`` (training, then
        :meth:`~zsr_lab.protocol.Protocol.describe` of :func:`reported_protocol`).
    """
    rows = [
        {
            "method": method,
            "attack": attack,
            "eps": 1.0,
            "clean_accuracy": clean,
            "robust_accuracy": robust,
            "source": source,
            "protocol": f"{TRAINING}; {reported_protocol(attack).describe()}",
        }
        for method, attack, clean, robust, source in _HEADLINE
    ]
    return pd.DataFrame(rows)


# RobustVLM's "Additional Models" (README at 16629d1): robust ViT-B/32 image towers, fine-tuned two epochs on ImageNet
# with TeCoA or FARE at ε = 1 or 4/255, and their zero-shot accuracy averaged over its 13 zero-shot sets; its
# benchmark script runs AutoAttack's APGD-CE + APGD-T (100 iterations; APGD-CE alone on 2-class sets) on 1,000 images
# per set, with CLIP_benchmark's prompt ensembles. The README does not restate the protocol next to the table.
ROBUSTVLM_DATASETS: tuple[str, ...] = (
    "cifar10",
    "stl10",
    "cifar100",
    "stanford_cars",
    "caltech101",
    "oxford_pets",
    "flowers102",
    "dtd",
    "eurosat",
    "fgvc_aircraft",
    "pcam",
    "imagenet_r",
    "imagenet_sketch",
)
_ROBUSTVLM = [  # label, model, pretrained (a zsr_lab tag or a hub model), clean, robust at ε = 1, 2, 4 /255
    ("TeCoA¹ (RobustVLM)", "ViT-B-32-quickgelu", "robustvlm-tecoa-eps1", 53.1, (38.8, 26.6, 9.6)),
    ("FARE¹ (RobustVLM)", "ViT-B-32-quickgelu", "robustvlm-fare-eps1", 60.5, (38.0, 20.1, 2.9)),
    ("TeCoA⁴ (RobustVLM)", "ViT-B-32-quickgelu", "robustvlm-tecoa-eps4", 44.0, (38.2, 33.1, 23.6)),
    ("FARE⁴ (RobustVLM)", "ViT-B-32-quickgelu", "robustvlm-fare-eps4", 48.6, (40.6, 33.7, 21.9)),
    ("TeCoA⁴ LAION (RobustVLM)", "hf-hub:chs20/TeCoA4-ViT-B-32-laion2B-s34B-b79K", None, 46.8, (40.6, 34.5, 23.3)),
    ("FARE⁴ LAION (RobustVLM)", "hf-hub:chs20/FARE4-ViT-B-32-laion2B-s34B-b79K", None, 53.8, (44.4, 35.5, 21.2)),
]


def robustvlm_protocol() -> Protocol:
    """RobustVLM's zero-shot protocol in zsr_lab's terms: its 13 sets, ``aa`` (APGD-CE → APGD-T), ε = 1, 2, 4 /255,
    1,000 images per set. zsr_lab's prompts are its own one template per set, not CLIP_benchmark's ensembles."""
    return Protocol(ROBUSTVLM_DATASETS, ("aa",), (1.0, 2.0, 4.0), 1000)


def robustvlm_results() -> pd.DataFrame:
    """RobustVLM's published zero-shot numbers for its robust ViT-B/32 checkpoints (reported, not reproduced here).

    Returns:
        One row per checkpoint × ε: ``method`` (its label), ``model`` and ``pretrained`` (what
        :func:`zsr_lab.load_clip` takes to load it), ``attack`` (``"aa"``), ``eps``, ``clean_accuracy``,
        ``robust_accuracy`` (means over the 13 sets), ``source`` and ``protocol``.
    """
    protocol = (
        f"ImageNet, two epochs; {robustvlm_protocol().describe()}; CLIP_benchmark's prompt ensembles; "
        f"APGD-CE alone on 2-class sets"
    )
    return pd.DataFrame(
        [
            {
                "method": label,
                "model": model,
                "pretrained": pretrained,
                "attack": "aa",
                "eps": eps,
                "clean_accuracy": clean,
                "robust_accuracy": robust,
                "source": "schlarmann2024fare",
                "protocol": protocol,
            }
            for label, model, pretrained, clean, robusts in _ROBUSTVLM
            for eps, robust in zip((1.0, 2.0, 4.0), robusts)
        ]
    )


def against_robustvlm(measured: pd.DataFrame) -> pd.DataFrame:
    """Your evaluation of RobustVLM's checkpoints next to its published numbers: "check your set-up".

    Arguments:
        measured: evaluation rows (:func:`zsr_lab.evaluate_robustness`) of models loaded by their zsr_lab tags
            (``pretrained`` = ``"robustvlm-tecoa-eps1"``, ...), under the worst case ``aa``.

    Returns:
        One row per checkpoint × ε: ``checkpoint``, ``eps``, ``datasets`` (how many of the 13 were measured),
        ``clean (reported)``, ``clean (measured)``, ``robust (reported)``, ``robust (measured)`` and
        ``robust difference`` (measured − reported, in points).
    """
    rows = measured[(measured["dataset"] != "mean") & (measured["attack"] == "aa")]
    ours = (
        rows.groupby(["pretrained", "eps"], sort=False)
        .agg(
            datasets=("dataset", "nunique"),
            clean_measured=("clean_accuracy", "mean"),
            robust_measured=("robust_accuracy", "mean"),
        )
        .reset_index()
    )
    theirs = robustvlm_results().dropna(subset=["pretrained"])
    both = theirs.merge(ours, on=["pretrained", "eps"])
    return pd.DataFrame(
        {
            "checkpoint": both["method"],
            "eps": both["eps"],
            "datasets": both["datasets"],
            "clean (reported)": both["clean_accuracy"],
            "clean (measured)": both["clean_measured"],
            "robust (reported)": both["robust_accuracy"],
            "robust (measured)": both["robust_measured"],
            "robust difference": both["robust_measured"] - both["robust_accuracy"],
        }
    )


def load_run_results(folder) -> pd.DataFrame:
    """Every ``results.csv`` that ``book/train_full.ipynb`` wrote under ``folder``, as one tidy table.

    Arguments:
        folder: a run folder, or a folder holding run folders (searched recursively).

    Returns:
        The per-dataset rows of every run (the mean rows are dropped; :func:`zsr_lab.summarize` recomputes them),
        with a ``run`` column naming the run folder. A method that appears in several runs (e.g. PMG-AFT in both
        forms) is labelled ``"method (run folder)"`` so the runs stay apart.

    Raises:
        FileNotFoundError: when ``folder`` does not exist or holds no ``results.csv``.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"results folder {folder} does not exist: pass the folder that holds the run folders "
            f"of book/train_full.ipynb (its run_dir parameter)"
        )
    files = sorted(folder.rglob("results.csv"))
    if not files:
        raise FileNotFoundError(
            f"no results.csv under {folder}: run book/train_full.ipynb with run_dir inside this "
            f"folder first (it writes results.csv into the run folder when the evaluation ends)"
        )
    tables = []
    for path in files:
        table = read_results_csv(path)
        table = table[table["dataset"] != "mean"].assign(run=path.parent.name)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    runs_per_method = table.groupby("method")["run"].nunique()
    repeated = table["method"].map(runs_per_method) > 1
    table.loc[repeated, "method"] = table.loc[repeated, "method"] + " (" + table.loc[repeated, "run"] + ")"
    return table
