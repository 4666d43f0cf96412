"""What the papers report, and loading what a user's own full-scale runs produced, as tidy tables.

Both tables have the columns of :func:`zsr_lab.summarize` (``method``, ``attack``, ``eps``, ``clean_accuracy``,
``robust_accuracy``) so they plot with the same functions as the book's own results.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .datasets import BENCHMARK_DATASETS
from .protocol import Protocol

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
    rows = [{"method": method, "attack": attack, "eps": 1.0, "clean_accuracy": clean, "robust_accuracy": robust,
             "source": source, "protocol": f"{TRAINING}; {reported_protocol(attack).describe()}"}
            for method, attack, clean, robust, source in _HEADLINE]
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
        if "members" in table.columns:  # written as JSON by write_results_csv
            table["members"] = [json.loads(m) if isinstance(m, str) else m for m in table["members"]]
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    runs_per_method = table.groupby("method")["run"].nunique()
    repeated = table["method"].map(runs_per_method) > 1
    table.loc[repeated, "method"] = table.loc[repeated, "method"] + " (" + table.loc[repeated, "run"] + ")"
    return table
