"""What the papers report, and loading what a user's own full-scale runs produced, as tidy tables.

Both tables have the columns of :func:`zsr_lab.summarize` (``method``, ``attack``, ``eps``, ``clean_accuracy``,
``robust_accuracy``) so they plot with the same functions as the book's own results.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

# ViT-B/32 fine-tuned on Tiny-ImageNet, evaluated zero-shot on the 16-dataset protocol, PGD-100 at 1/255, mean
# over the 16 datasets, as reported by the TGA-ZSR and Comp-TGA papers (which re-ran the baselines under it).
# TIMA reports a different protocol (PGD-10, AutoAttack, larger ε), so it has no row here.
_HEADLINE = [
    ("CLIP (zero-shot)", 64.42, 4.90, "yu2024tgazsr"),
    ("tecoa", 45.81, 28.06, "yu2024tgazsr"),
    ("pmg_aft", 46.60, 32.51, "yu2024tgazsr"),
    ("fare", 59.85, 18.25, "yu2024tgazsr"),
    ("tga_zsr", 56.44, 42.09, "yu2024tgazsr"),
    ("comp_tga", 55.44, 44.46, "yu2026comptga"),
]
REPORTED_PROTOCOL = ("ViT-B/32 (OpenAI weights) fine-tuned on Tiny-ImageNet; zero-shot on the 16-dataset "
                     "benchmark; PGD-100, ε = 1/255, step 1/255; mean over the 16 datasets")


def reported_results() -> pd.DataFrame:
    """The papers' headline numbers (reported, not reproduced here), one row per method.

    Returns:
        Columns ``method``, ``attack`` (``"pgd-100"``), ``eps`` (1.0), ``clean_accuracy``, ``robust_accuracy``,
        ``source`` (the citation key of the paper the number is taken from) and ``protocol``.
    """
    rows = [{"method": method, "attack": "pgd-100", "eps": 1.0, "clean_accuracy": clean, "robust_accuracy": robust,
             "source": source, "protocol": REPORTED_PROTOCOL} for method, clean, robust, source in _HEADLINE]
    return pd.DataFrame(rows)


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
        raise FileNotFoundError(f"results folder {folder} does not exist: pass the folder that holds the run folders "
                                f"of book/train_full.ipynb (its run_dir parameter)")
    files = sorted(folder.rglob("results.csv"))
    if not files:
        raise FileNotFoundError(f"no results.csv under {folder}: run book/train_full.ipynb with run_dir inside this "
                                f"folder first (it writes results.csv into the run folder when the evaluation ends)")
    tables = []
    for path in files:
        table = pd.read_csv(path)
        table = table[table["dataset"] != "mean"].assign(run=path.parent.name)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    runs_per_method = table.groupby("method")["run"].nunique()
    repeated = table["method"].map(runs_per_method) > 1
    table.loc[repeated, "method"] = table.loc[repeated, "method"] + " (" + table.loc[repeated, "run"] + ")"
    return table
