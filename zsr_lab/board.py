"""A leaderboard of robust CLIP models that cannot be gamed: each number ranked only against numbers measured the
same way.

Papers place side by side numbers that were measured differently: "AutoAttack" is APGD-CE + APGD-DLR in the
TGA-ZSR lineage, APGD-CE + APGD-T in RobustVLM and four attacks in AutoAttack itself, on whole splits or on 1,000
images per set. A board here is one protocol: the datasets, the images per dataset, ε, the suite by what it
contains, the stopping rule, the prompt templates and the model family. Entries of different protocols go on
different boards and are never ranked together.

Every entry carries its clean and worst-case accuracy with its 95 % interval, the fingerprint of the weights it was
measured on, where it came from, and what its own sanity checks found. Entries that no test separates share a rank:
paired tests (McNemar's exact test) where both carry per-image outcomes on the same images, an unpaired test from
the images' numbers otherwise, Holm-corrected over the board's pairs as in :func:`zsr_lab.rank_groups`.

- :func:`read_entries`: the entries of a result file or of every result file under a folder (``results.jsonl`` of
  :func:`zsr_lab.evaluate_robustness`, ``python -m zsr_lab.evaluate`` and :func:`zsr_lab.fit`; ``results.csv`` of
  :func:`zsr_lab.fit` and ``book/train_full.ipynb``).
- :func:`reported_entries`: the published numbers of :mod:`zsr_lab.reported`, each under its own protocol.
- :class:`Board`: entries collected, checked against each other, ranked per protocol (:meth:`Board.table`).

Input that does not fit is refused with the file and the reason (:class:`BoardError`), never merged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from . import reported, settings
from .datasets import BENCHMARK_DATASETS
from .evaluate import RESULTS_FILE, RESULTS_FORMAT, load_results, read_results_csv
from .uncertainty import ALPHA, Z95, paired_rows, stratified_interval

# the fields without which a result row cannot be placed on a board, and what each says
REQUIRED_FIELDS = {
    "model": "the architecture",
    "weights": "the fingerprint of the weights",
    "dataset": "the evaluation set",
    "template": "the prompt template",
    "attack": "the suite",
    "members": "what the suite contains",
    "eps": "the budget",
    "stopping": "the stopping rule",
    "n": "the images evaluated",
    "clean_accuracy": "the clean accuracy",
    "robust_accuracy": "the accuracy under the suite",
}
# suites named by what they contain (attack kinds, in order); any other is its members joined by "+"
SUITE_NAMES = {
    ("APGD-CE", "APGD-DLR"): "APGD-CE+DLR",
    ("APGD-CE", "APGD-T"): "APGD-CE+T",
    ("APGD-CE", "APGD-T", "FAB-T", "Square"): "AutoAttack standard",
}
FAMILIES = {  # architecture name (a prefix) → the family a board groups
    "ViT-B-32": "ViT-B/32",
    "zsr-classroom-vit": "classroom ViT (zsr_lab)",
    "zsr-scenes-vit": "scenes ViT (zsr_lab)",
}
TOLERANCE = 2.0  # accuracy points of sampling noise allowed by the checks across ε


class BoardError(ValueError):
    """A result file or entry the board refuses: the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class BoardProtocol:
    """What a number was measured under; numbers are ranked only against numbers of the same protocol."""

    datasets: tuple[str, ...]
    images: tuple[int, ...]  # per dataset, in the order of ``datasets``
    eps: float  # units of 1/255
    suite: str  # by what it contains (:func:`suite_label`)
    stopping: str  # "any" (an image counts as broken at any iterate) or "last" (the last iterate only)
    templates: tuple[str, ...]  # per dataset
    family: str

    def describe(self) -> str:
        """One line: the suite, ε, stopping rule, datasets with their images, templates and model family."""
        sizes = set(self.images)
        images = (
            f"{sizes.pop():,} images each"
            if len(sizes) == 1
            else ", ".join(f"{d} {n:,}" for d, n in zip(self.datasets, self.images))
        )
        templates = set(self.templates)
        prompts = f"template {templates.pop()!r}" if len(templates) == 1 else "one template per set"
        sets = "set" if len(self.datasets) == 1 else "sets"
        return (
            f"{self.suite}, ε = {self.eps:g}/255, {self.stopping}-iterate; {len(self.datasets)} {sets} "
            f"({images if len(sizes) > 1 else ', '.join(self.datasets) + '; ' + images}); {prompts}; {self.family}"
        )


@dataclass
class Entry:
    """One model's numbers under one protocol."""

    name: str
    protocol: BoardProtocol
    attack: str  # the suite as its evaluation named it ("pgd-10+aa-10:targets=3", "PGD-100")
    clean: float | None  # %; None where a source does not report it
    clean_interval: tuple[float, float] | None
    robust: float
    robust_interval: tuple[float, float]
    weights: str | None  # fingerprint of the weights; None for a published number
    source: str  # the file it was read from, or the citation
    checks: str  # "passed (k checks)", "failed: ...", or why there are none
    rows: pd.DataFrame | None = field(default=None, repr=False)  # per dataset, with per-image outcomes


# ---- reading result files --------------------------------------------------------------------------------------


def suite_label(members: Sequence[dict | str] | dict[str, Sequence[dict | str]]) -> str:
    """A suite named by what it contains: ``"APGD-CE+T (100 steps)"``, ``"PGD-100"``,
    ``"PGD-10+APGD-CE-10+APGD-T-10"``; two suites get the same name only if they run the same attacks.

    ``members`` is one suite's members, or per dataset the members the suite ran there (a suite drops or replaces
    members on sets of few classes): the label is then the most common one, with the sets that differ named."""
    if isinstance(members, dict):
        labels = {dataset: suite_label(ms) for dataset, ms in members.items()}
        common = pd.Series(list(labels.values())).mode().iloc[0]
        others = [f"{dataset}: {label}" for dataset, label in labels.items() if label != common]
        return common + (f" ({'; '.join(others)})" if others else "")
    names = [m["attack"] if isinstance(m, dict) else str(m) for m in members]
    kinds = tuple(re.sub(r"-\d+$", "", name) for name in names)
    steps = {match.group(1) for name in names if (match := re.search(r"-(\d+)$", name))}
    if kinds in SUITE_NAMES and len(steps) <= 1:
        return SUITE_NAMES[kinds] + (f" ({steps.pop()} steps)" if steps else "")
    return "+".join(names)


def model_family(model: str) -> str:
    """The family a board groups (``"ViT-B/32"`` for OpenAI's, LAION's and fine-tuned ViT-B-32s alike)."""
    for prefix, family in FAMILIES.items():
        if model.removeprefix("hf-hub:").split("/")[-1].startswith(prefix) or prefix in model:
            return family
    return model


def read_entries(path) -> list[Entry]:
    """The entries of one result file, or of every ``results.jsonl`` and ``results.csv`` under a folder.

    Arguments:
        path: a ``results.jsonl`` (an evaluation folder's), a ``results.csv`` (a run folder's), or a folder
            searched recursively for both.

    Returns:
        One :class:`Entry` per model (weights), suite and ε found, named by its ``method`` column where the file
        has one, else by the folder the weights or the file lie in.

    Raises:
        BoardError: the path does not exist, holds no result file, or a file is of another format or lacks a
            protocol field; the message names the file and what is missing.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        # a run folder's results.csv first: it names the method; its evaluation/results.jsonl repeats the numbers
        files = sorted(
            [*path.rglob("results.csv"), *path.rglob(RESULTS_FILE)], key=lambda p: (p.suffix != ".csv", str(p))
        )
        if not files:
            raise BoardError(
                f"{path}: no results.csv or {RESULTS_FILE} under this folder; pass a run folder of "
                f"book/train_full.ipynb or zl.fit, or an evaluation folder of zl.evaluate_robustness"
            )
        return [entry for file in files for entry in read_entries(file)]
    if not path.is_file():
        raise BoardError(f"{path}: no such file or folder")
    return _entries(_checked_rows(_read_rows(path), str(path)), settings.shown_path(path), path.parent)


def table_entries(table: pd.DataFrame, source: str) -> list[Entry]:
    """The entries of an evaluation table in memory (:func:`zsr_lab.evaluate_robustness`, ``fit(...).evaluation``,
    :func:`zsr_lab.evaluate_pretrained`), with ``source`` saying where it came from.

    Raises:
        BoardError: the table lacks a protocol field (the message names ``source`` and the field)."""
    rows = table[table["dataset"] != "mean"] if "dataset" in table.columns else table
    return _entries(_checked_rows(rows.reset_index(drop=True), source), source, None)


def _read_rows(path: Path) -> pd.DataFrame:
    if path.suffix == ".jsonl":
        try:
            found = list(load_results(path).values())
        except (OSError, UnicodeDecodeError) as error:
            raise BoardError(f"{path}: not a results file of zsr_lab ({error})") from None
        if not found:
            raise BoardError(
                f"{path}: no rows of the current results format ({RESULTS_FORMAT}); rows of older formats drew "
                f"random starts per batch or were keyed by a path: evaluate the model again with this zsr_lab"
            )
        rows = pd.DataFrame(found)
    elif path.suffix == ".csv":
        try:
            rows = read_results_csv(path)
        except (pd.errors.ParserError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
            raise BoardError(f"{path}: not a results.csv of zsr_lab ({error})") from None
        if "dataset" in rows.columns:
            rows = rows[rows["dataset"] != "mean"]  # recomputed from the datasets' rows
    else:
        raise BoardError(
            f"{path}: a board reads results.jsonl (zl.evaluate_robustness) or results.csv (zl.fit, "
            f"book/train_full.ipynb), not a {path.suffix or 'suffix-less'} file"
        )
    return rows.reset_index(drop=True)


def _checked_rows(rows: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [f"{name} ({what})" for name, what in REQUIRED_FIELDS.items() if name not in rows.columns]
    if missing:
        raise BoardError(f"{source}: rows without {', '.join(missing)}: not a results file of zsr_lab")
    empty = [name for name in REQUIRED_FIELDS if rows[name].isna().any()]
    if empty:
        raise BoardError(f"{source}: rows with an empty {', '.join(empty)}: a protocol field is missing")
    return rows


def _entries(rows: pd.DataFrame, source: str, folder: Path | None) -> list[Entry]:
    """One entry per weights, suite, ε, stopping rule and image seed; per dataset the row of the most images (a
    results.jsonl keeps every evaluation of the weights, e.g. a quick check on fewer images beside the protocol's)."""
    entries = []
    keys = [k for k in ("weights", "attack", "eps", "stopping", "model", "seed") if k in rows]
    for _, group in rows.groupby(keys, sort=False, dropna=False):
        first = group.iloc[0]
        group = group.sort_values("n", kind="stable").drop_duplicates("dataset", keep="last").sort_values("dataset")
        protocol = BoardProtocol(
            datasets=tuple(group["dataset"]),
            images=tuple(int(n) for n in group["n"]),
            eps=float(first["eps"]),
            suite=suite_label(dict(zip(group["dataset"], group["members"]))),
            stopping=str(first["stopping"]),
            templates=tuple(str(t) for t in group["template"]),
            family=model_family(str(first["model"])),
        )
        clean = stratified_interval(group["clean_accuracy"].astype(float), group["n"].astype(float))
        robust = stratified_interval(group["robust_accuracy"].astype(float), group["n"].astype(float))
        entries.append(
            Entry(
                name=_entry_name(first, folder),
                protocol=protocol,
                attack=str(first["attack"]),
                clean=clean[0],
                clean_interval=clean[1:],
                robust=robust[0],
                robust_interval=robust[1:],
                weights=str(first["weights"]),
                source=source,
                checks="",
                rows=group.reset_index(drop=True),
            )
        )
    for entry in entries:
        entry.checks = _checks(entry, entries)
    return entries


def _entry_name(row: pd.Series, folder: Path | None) -> str:
    """The method where the rows name it, else the folder of the weights or of the results file."""
    if isinstance(row.get("method"), str) and row["method"]:
        return row["method"]
    weights = Path(str(row.get("pretrained", "")))
    if weights.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        folder = weights.parent
    if folder is None:
        return str(row.get("pretrained") or row["weights"])
    return folder.parent.name if folder.name == "evaluation" else folder.name


def _checks(entry: Entry, entries: Sequence[Entry]) -> str:
    """What the entry's own rows say about the attack that produced them (the checks of
    :func:`zsr_lab.sanity.check_evaluation` that need no model): every perturbation inside the ε-ball and the
    image box, the worst case never above clean accuracy nor above any member alone, and robust accuracy not
    rising with ε across the same weights' entries of the same suite."""
    failed, count = [], 0
    members = [m for ms in entry.rows["members"] for m in ms]
    if members and all("max_perturbation" in m and "eps_pixels" in m for m in members):
        count += 1
        if any(m["max_perturbation"] > m["eps_pixels"] + 1e-6 or m.get("out_of_box", 0) > 0 for m in members):
            failed.append("a perturbation left the ε-ball or the [0,1] box")
    count += 1
    if (entry.rows["robust_accuracy"] > entry.rows["clean_accuracy"] + 1e-9).any():
        failed.append("robust accuracy above clean accuracy")
    alone = [
        (row.robust_accuracy, m["robust_alone"])
        for row in entry.rows.itertuples()
        for m in row.members
        if m.get("robust_alone") is not None
    ]
    if alone:
        count += 1
        if any(worst > single + 1e-9 for worst, single in alone):
            failed.append("the worst case above a member on its own")
    budgets = sorted(
        (e.protocol.eps, e.robust)
        for e in entries
        if e.weights == entry.weights
        and e.protocol.suite == entry.protocol.suite
        and e.protocol.datasets == entry.protocol.datasets
    )
    if len(budgets) > 1:
        count += 1
        if any(later > earlier + TOLERANCE for (_, earlier), (_, later) in zip(budgets, budgets[1:])):
            failed.append("robust accuracy rises with ε")
    verdict = f"failed: {'; '.join(failed)}" if failed else f"passed ({count} checks)"
    flags = _listed(entry.rows, "red_flags")
    if flags:  # rows of zl.grade_model: the flags its red-flag run raised and the attacks that answered them
        answers = ", ".join(_listed(entry.rows, "adaptive"))
        verdict += f"; red flags: {', '.join(flags)} (scored by adaptive attacks: {answers})"
    return verdict


def _challenge_level(entry: Entry) -> str:
    """ "beats TeCoA", "passed" or "not passed" for rows of :func:`zsr_lab.grade_model`; "" for any other entry."""
    rows = entry.rows
    if rows is None or "passed" not in rows.columns or "beats_tecoa" not in rows.columns:
        return ""
    if rows["beats_tecoa"].astype(bool).all():
        return "beats TeCoA"
    return "passed" if rows["passed"].astype(bool).all() else "not passed"


def _listed(rows: pd.DataFrame, column: str) -> list[str]:
    """The distinct items of a column of "; "-joined lists (empty where the rows have no such column)."""
    values = rows[column] if column in rows.columns else []
    return list(dict.fromkeys(item for value in values if isinstance(value, str) for item in value.split("; ") if item))


# ---- published numbers -----------------------------------------------------------------------------------------


def _published_interval(mean: float, sizes: Sequence[int]) -> tuple[float, float]:
    """The 95 % interval of a published mean over datasets, each set taken at the mean (the per-set values are not
    published): the variance :func:`zsr_lab.uncertainty.unpaired_difference` uses for one of its two means."""
    p = mean / 100
    half = 100 * Z95 * math.sqrt(p * (1 - p) * float(np.sum(1 / np.asarray(sizes, float)))) / len(sizes)
    return max(mean - half, 0.0), min(mean + half, 100.0)


_PUBLISHED_SUITES = {  # zl.reported's attack names → (suite label, stopping rule)
    "PGD-100": ("PGD-100", "last"),
    "CW-100": ("CW-100", "last"),
    "papers-aa": ("APGD-CE+DLR (100 steps)", "any"),
    "aa": ("APGD-CE+T (100 steps)", "any"),
}


def reported_entries() -> list[Entry]:
    """The published numbers of :mod:`zsr_lab.reported` as board entries, each under the protocol it was measured
    with: the TGA-ZSR and Comp-TGA papers' tables (16 sets, whole splits, 1/255), UCAT's re-runs (16 × 1,000
    images, APGD-CE+DLR) and RobustVLM's checkpoints (13 sets × 1,000 images, APGD-CE+T). Their intervals take
    every set at the published mean; they carry no per-image outcomes and no checks of their own."""
    papers = reported.reported_results()
    robustvlm = reported.robustvlm_results()
    whole = tuple(reported.WHOLE_SPLIT_SIZES[d] for d in BENCHMARK_DATASETS)
    entries = []

    def add(name, attack, eps, clean, robust, datasets, images, templates, source):
        suite, stopping = _PUBLISHED_SUITES[attack]
        templates = (templates,) * len(datasets)
        protocol = BoardProtocol(datasets, images, float(eps), suite, stopping, templates, "ViT-B/32")
        entries.append(
            Entry(
                name=name,
                protocol=protocol,
                attack=attack,
                clean=clean,
                clean_interval=_published_interval(clean, images) if clean is not None else None,
                robust=robust,
                robust_interval=_published_interval(robust, images),
                weights=None,
                source=reported.CITATIONS[source],
                checks="none published",
            )
        )

    papers_protocol = dict(datasets=BENCHMARK_DATASETS, images=whole, templates="the paper's")
    sets = reported.ROBUSTVLM_DATASETS
    robustvlm_protocol = dict(datasets=sets, images=(1000,) * len(sets), templates="CLIP_benchmark's ensembles")
    for table, protocol in ((papers, papers_protocol), (robustvlm, robustvlm_protocol)):
        for row in table.itertuples():
            add(row.method, row.attack, row.eps, row.clean_accuracy, row.robust_accuracy, **protocol, source=row.source)
    reruns = dict(papers_protocol, images=(1000,) * len(BENCHMARK_DATASETS))
    for method, robust in reported.RERUNS:
        add(f"{method} (UCAT's re-run)", "papers-aa", 1.0, None, robust, **reruns, source="lu2026ucat")
    return entries


# ---- the board -------------------------------------------------------------------------------------------------


class Board:
    """Entries collected from result files and published tables, ranked per protocol.

    Arguments:
        sources: result files or folders (:func:`read_entries`), evaluation tables (:func:`table_entries`) and/or
            lists of :class:`Entry`.
        reported: add the published numbers (:func:`reported_entries`).

    Examples::
        >>> board = zl.board.Board(runs_folder, reported=True)
        >>> board.table()            # every protocol's ranking, one row per entry

    Raises:
        BoardError: a file the board cannot read, or two entries of the same weights and protocol with different
            numbers (the message names both sources).
    """

    def __init__(self, *sources, reported: bool = False):
        self.entries: list[Entry] = []
        self._names: dict[str, str] = {}  # weights → the first name found for them (a results.csv's method)
        for source in sources:
            if isinstance(source, pd.DataFrame):
                self.add(table_entries(source, "an evaluation table"))
            else:
                self.add(source if isinstance(source, list) else read_entries(source))
        if reported:
            self.add(reported_entries())

    def add(self, entries: Iterable[Entry]) -> None:
        """Add entries; one already on the board (same weights, same protocol, same numbers) is kept once."""
        for entry in entries:
            if entry.weights:  # one model, one name: an evaluation folder's rows take the run's method name
                entry.name = self._names.setdefault(entry.weights, entry.name)
            same = next(
                (e for e in self.entries if e.weights and e.weights == entry.weights and e.protocol == entry.protocol),
                None,
            )
            if same is None:
                self.entries.append(entry)
            elif not _same_numbers(same, entry):
                raise BoardError(
                    f"{entry.source}: weights {entry.weights} under {entry.protocol.describe()} give clean "
                    f"{_number(entry.clean)} / robust {entry.robust:.2f}, but {same.source} gives clean "
                    f"{_number(same.clean)} / robust {same.robust:.2f}; the same weights measured the same way "
                    f"cannot differ: find which file is stale (nothing was merged)"
                )

    def protocols(self, attack: str | None = None) -> list[BoardProtocol]:
        """The boards' protocols, in the order their first entries came; ``attack``: only those of the suite its
        evaluations named so (e.g. the protocol's worst case, not PGD alone)."""
        return list(dict.fromkeys(e.protocol for e in self.entries if attack is None or e.attack == attack))

    def ranked(self, protocol: BoardProtocol) -> pd.DataFrame:
        """One protocol's board, best first: rank (shared where no test separates entries), name, the numbers with
        their intervals, the weights' fingerprint, the source and the checks; on a class board of
        :func:`zsr_lab.grade_model`, the level each submission reached ("beats TeCoA", "passed", "not passed")."""
        entries = [e for e in self.entries if e.protocol == protocol]
        ranks = _ranks(entries)
        table = pd.DataFrame(
            {
                "rank": ranks,
                "model": [e.name for e in entries],
                "clean (%)": [_with_interval(e.clean, e.clean_interval) for e in entries],
                "robust (%)": [_with_interval(e.robust, e.robust_interval) for e in entries],
                "robust": [e.robust for e in entries],
                "weights": [e.weights or "—" for e in entries],
                "source": [e.source for e in entries],
                "checks": [e.checks for e in entries],
            }
        )
        levels = [_challenge_level(e) for e in entries]
        if any(levels):  # a class board of zl.grade_model: the level each submission reached
            table.insert(4, "level", levels)
        table = table.sort_values(["rank", "robust"], ascending=[True, False]).drop(columns="robust")
        return table.reset_index(drop=True)

    def table(self) -> pd.DataFrame:
        """Every board, one after another, each row with its protocol (:meth:`BoardProtocol.describe`)."""
        boards = [self.ranked(p).assign(protocol=p.describe()) for p in self.protocols()]
        return pd.concat(boards, ignore_index=True) if boards else pd.DataFrame()

    def html(self, protocols: Sequence[BoardProtocol] | None = None) -> str:
        """The boards of ``protocols`` (default: all) as a page shows them: each protocol above its ranking, in a
        table that sorts by any column when its header is clicked (in a book page, or a notebook that runs the
        output's script)."""
        parts = []
        for protocol in self.protocols() if protocols is None else protocols:
            ranked = self.ranked(protocol)
            ranked["source"] = ranked["source"].map(_short_source)
            parts.append(f'<p class="zsr-board-protocol"><b>Protocol:</b> {escape(protocol.describe())}</p>')
            parts.append(ranked.to_html(index=False, classes="zsr-board", border=0))
        return "\n".join(parts) + SORTABLE


def _short_source(source: str) -> str:
    """A results file as a page shows it: its run or evaluation folder and its name (the full path is in
    :meth:`Board.table`); a citation as it is."""
    parts = Path(source).parts
    return "/".join(parts[-2:]) if len(parts) > 2 and Path(source).suffix in (".csv", ".jsonl") else source


# makes every board table on the page sortable once; "var" only: a page may hold this script more than once
SORTABLE = """
<script>
(function () {
  var key = function (row, column) {
    var text = row.cells[column].textContent.trim(), number = parseFloat(text);
    return isNaN(number) ? text : number;
  };
  document.querySelectorAll("table.zsr-board:not([data-sortable])").forEach(function (table) {
    table.setAttribute("data-sortable", "");
    table.querySelectorAll("thead th").forEach(function (header, column) {
      header.style.cursor = "pointer";
      header.title = "sort by this column (click again to reverse)";
      header.addEventListener("click", function () {
        var ascending = header.getAttribute("data-order") !== "ascending";
        var rows = Array.prototype.slice.call(table.tBodies[0].rows);
        rows.sort(function (a, b) {
          var x = key(a, column), y = key(b, column);
          var order = typeof x !== typeof y ? (typeof x === "number" ? -1 : 1) : x < y ? -1 : x > y ? 1 : 0;
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { table.tBodies[0].appendChild(row); });
        header.setAttribute("data-order", ascending ? "ascending" : "descending");
      });
    });
  });
})();
</script>
"""


def _number(value: float | None) -> str:
    return "not reported" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None or interval is None:
        return "not reported"
    return f"{value:.1f} [{interval[0]:.1f}, {interval[1]:.1f}]"


def _same_numbers(a: Entry, b: Entry) -> bool:
    close = math.isclose(a.robust, b.robust, abs_tol=1e-6)
    if a.clean is None or b.clean is None:
        return close and a.clean is b.clean
    return close and math.isclose(a.clean, b.clean, abs_tol=1e-6)


def _p_value(a: Entry, b: Entry) -> tuple[float, float]:
    """(difference a − b in points, two-sided p): paired where both carry outcomes on the same images, else the
    unpaired normal test with the variance of :func:`zsr_lab.uncertainty.unpaired_difference`."""
    if a.rows is not None and b.rows is not None and "robust_outcomes" in a.rows and "robust_outcomes" in b.rows:
        paired = paired_rows(a.rows, b.rows, "robust_outcomes")
        if paired is not None:
            return paired.difference, paired.p_value
    sizes = np.asarray(a.protocol.images, float)
    p, q = a.robust / 100, b.robust / 100
    spread = math.sqrt((p * (1 - p) + q * (1 - q)) * float(np.sum(1 / sizes))) / len(sizes)
    difference = a.robust - b.robust
    if spread == 0:
        return difference, 1.0 if difference == 0 else 0.0
    return difference, math.erfc(abs(difference) / 100 / spread / math.sqrt(2))


def _ranks(entries: Sequence[Entry]) -> list[int]:
    """1 + the number of entries significantly above each (Holm over all pairs, as :func:`rank_groups`)."""
    tests = []
    for i, a in enumerate(entries):
        for j in range(i + 1, len(entries)):
            difference, p = _p_value(a, entries[j])
            tests.append((i, j, difference, p))
    separated_above = [set() for _ in entries]  # per entry: the entries a test puts above it
    for position, (i, j, difference, p) in enumerate(sorted(tests, key=lambda t: t[3])):
        if p > ALPHA / (len(tests) - position):  # Holm: stop at the first test that fails its threshold
            break
        better, worse = (i, j) if difference > 0 else (j, i)
        separated_above[worse].add(better)
    return [1 + len(above) for above in separated_above]
