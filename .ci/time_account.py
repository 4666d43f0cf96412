"""Where the time of a test run and of a book build went: per chapter and per kind of work.

Reads, from the zsr_lab cache the run used (``$ZSR_LAB_CACHE``, or ``--cache``):
- ``worklog.jsonl``: every pre-training, fit, evaluation, measure, figure and book build zsr_lab timed
  (:mod:`zsr_lab.worklog`), with whether it was computed or read from a cache;
- ``nbval_chapters.json``: each chapter's start and end in the last test run, and the chapters it checked from
  the book build's execution instead of executing them (written by tests/conftest.py);
and the book build's execution reports (jupyter-cache, ``_build/.jupyter_cache``: each chapter's execution time
and when it finished). Work is assigned to the chapter whose execution it falls in; "other" is the rest of a
chapter's time (starting the kernel, imports, loading data, small cells, turning figures into images).

Prints the last test run and the last build of each edition. Usage (after ``pytest`` and/or
``jupyter-book build .``, with the same ``ZSR_LAB_CACHE``)::

    .venv/bin/python .ci/time_account.py [--cache DIR] [--book DIR]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zsr_lab import settings, worklog  # noqa: E402

WORK = [kind for kind in worklog.KINDS if kind != "rendering"]


def test_run(cache: Path) -> tuple[dict | None, list[tuple[str, float, float]]]:
    """The last test run's report (session window, the unit tests' time, the slowest of them) and its chapters'
    windows (name, start, stop)."""
    path = cache / "nbval_chapters.json"
    if not path.exists():
        return None, []
    report = json.loads(path.read_text())
    chapters = [(Path(name).stem, c["start"], c["stop"]) for name, c in report["chapters"].items()]
    return report, chapters


def build_chapters(book: Path, build: dict) -> list[tuple[str, float, float]]:
    """The chapters the build executed (their jupyter-cache record finished during it): (name, start, stop)."""
    database = book / "_build" / ".jupyter_cache" / "global.db"
    if not database.exists():
        return []
    with sqlite3.connect(database) as connection:
        rows = connection.execute("select uri, data, created from nbcache").fetchall()
    chapters = []
    for uri, data, created in rows:
        stop = datetime.fromisoformat(created).replace(tzinfo=timezone.utc).timestamp()  # jupyter-cache stores UTC
        seconds = json.loads(data or "{}").get("execution_seconds", 0.0)
        if build["start"] <= stop <= build["start"] + build["seconds"] + 1:
            chapters.append((Path(uri).stem, stop - seconds, stop))
    return sorted(chapters, key=lambda chapter: chapter[1])


def account(log: pd.DataFrame, chapters: list[tuple[str, float, float]]) -> pd.DataFrame:
    """Seconds per chapter: its total, each kind of work (self time), other; and records computed / read."""
    rows = []
    for name, start, stop in chapters:
        inside = log[(log["start"] >= start) & (log["start"] <= stop) & (log["kind"] != "rendering")]
        row = {"chapter": name, "total": stop - start}
        for kind in WORK:
            row[kind] = inside.loc[inside["kind"] == kind, "self_seconds"].sum()
        row["other"] = row["total"] - sum(row[kind] for kind in WORK)
        top = inside[inside["depth"] == 0]
        row["computed / read"] = f"{int((~top['cached'].astype(bool)).sum())} / {int(top['cached'].astype(bool).sum())}"
        rows.append(row)
    table = pd.DataFrame(rows, columns=["chapter", "total", *WORK, "other", "computed / read"])
    if len(table):
        total = table[["total", *WORK, "other"]].sum()
        table.loc[len(table)] = {"chapter": "all chapters", **total.to_dict(), "computed / read": ""}
    return table


def outside(log: pd.DataFrame, window: dict, chapters) -> pd.Series:
    """Self seconds per kind of the work in ``window`` outside every chapter (unit tests, fixtures)."""
    inside_window = log[(log["start"] >= window["start"]) & (log["start"] <= window["stop"])]
    for _, start, stop in chapters:
        inside_window = inside_window[(inside_window["start"] < start) | (inside_window["start"] > stop)]
    return inside_window.groupby("kind")["self_seconds"].sum().reindex(WORK, fill_value=0.0)


def show(title: str, table: pd.DataFrame) -> None:
    print(f"\n{title}")
    print(table.to_string(index=False, float_format=lambda seconds: f"{seconds:.0f}"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", help="the zsr_lab cache the run used (default: $ZSR_LAB_CACHE)")
    parser.add_argument("--book", default=str(ROOT), help="the book's folder, holding _build (default: this one)")
    args = parser.parse_args(argv)
    cache = settings.cache_dir(args.cache)
    log = worklog.read_worklog(cache / worklog.LOG_FILE)
    if log.empty:
        print(f"no work log in {cache}: run the tests or build the book with ZSR_LAB_CACHE={cache} first")
        return 1
    print(f"time account from {cache / worklog.LOG_FILE} (seconds; work in a chapter counted once, nested work apart)")
    report, tested = test_run(cache)
    if report:
        session = report["session"]
        title = f"test run: {session['stop'] - session['start']:.0f} s in all"
        if tested:
            show(f"{title}; the chapters under nbval", account(log, tested))
        else:
            print(f"\n{title}")
        work = ", ".join(f"{kind} {seconds:.0f}" for kind, seconds in outside(log, session, tested).items())
        print(f"unit tests: {report['unit_tests']:.0f} s, of which work: {work}; the slowest (s):")
        for test, seconds in report["slowest"].items():
            print(f"  {seconds:6.1f}  {test}")
        if report.get("recorded"):
            print(f"chapters checked from the book build's execution, not executed again: {len(report['recorded'])}")
    # the last build of each edition (CI: the book, whose execution the tests then check, and the student edition)
    builds = log[log["kind"] == "rendering"].groupby("what").tail(1).sort_values("start")
    for _, build in builds.iterrows():
        executed = build_chapters(Path(args.book), build.to_dict())
        executing = sum(stop - start for _, start, stop in executed)
        title = (
            f"book build, {build['what']}: {build['seconds']:.0f} s in all = {executing:.0f} s executing "
            f"{len(executed)} chapters + {build['seconds'] - executing:.0f} s reading and rendering pages"
        )
        if executed:
            show(title, account(log, executed))
        else:
            print(f"\n{title}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
