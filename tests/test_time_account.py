""".ci/time_account.py: the work log and the execution reports added up per chapter and kind of work."""

import importlib.util
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from zsr_lab import worklog

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "time_account.py"


@pytest.fixture(scope="module")
def time_account():
    spec = importlib.util.spec_from_file_location("time_account", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _line(kind, what, start, seconds, self_seconds=None, cached=False, depth=0):
    self_seconds = seconds if self_seconds is None else self_seconds
    record = dict(kind=kind, what=what, start=start, seconds=seconds, self_seconds=self_seconds)
    return json.dumps({**record, "cached": cached, "depth": depth, "pid": 1}) + "\n"


def _executed_chapter(book, name, *, finished, seconds):
    """The build's execution report of one chapter, as jupyter-cache records it (UTC, without a zone)."""
    database = book / "_build" / ".jupyter_cache" / "global.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as connection:
        connection.execute("create table if not exists nbcache (uri text, data json, created datetime)")
        created = datetime.fromtimestamp(finished, tz=timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
        data = json.dumps({"execution_seconds": seconds})
        connection.execute("insert into nbcache values (?, ?, ?)", (f"/x/book/{name}.ipynb", data, created))


def test_the_account_assigns_work_to_chapters_and_subtracts_it_from_their_time(time_account, tmp_path, capsys):
    cache, book = tmp_path / "cache", tmp_path / "book"
    cache.mkdir()
    t0 = 1_800_000_000.0
    # a test run: unit tests (a pre-training), then one chapter under nbval from t0+100 to t0+160
    (cache / worklog.LOG_FILE).write_text(
        _line("pre-training", "zsr-classroom-vit", t0 + 5, 50)
        + _line("fitting", "tecoa", t0 + 110, 30, self_seconds=20)
        + _line("evaluating", "robustness on digits", t0 + 120, 10, depth=1)
        + _line("drawing", "plot_training", t0 + 150, 2)
        # the book build from t0+200 to t0+300; it executes the chapter again from t0+210 to t0+250
        + _line("fitting", "tecoa", t0 + 212, 4, cached=True)
        + _line("rendering", "book (html)", t0 + 200, 100)
    )
    report = {
        "session": {"start": t0, "stop": t0 + 170},
        "chapters": {"book/tecoa.ipynb": {"seconds": 60, "start": t0 + 100, "stop": t0 + 160}},
        "unit_tests": 95.0,
        "slowest": {"tests/test_x.py::test_slow": 70.0},
    }
    (cache / "nbval_chapters.json").write_text(json.dumps(report))
    _executed_chapter(book, "tecoa", finished=t0 + 250, seconds=40)
    assert time_account.main(["--cache", str(cache), "--book", str(book)]) == 0
    tested = time_account.account(worklog.read_worklog(cache / worklog.LOG_FILE), [("tecoa", t0 + 100, t0 + 160)])
    row = tested.iloc[0]
    assert (row["total"], row["fitting"], row["evaluating"], row["drawing"]) == (60, 20, 10, 2)
    assert row["other"] == 60 - 32 and row["computed / read"] == "2 / 0"  # the nested evaluation is not a top one
    out = capsys.readouterr().out
    assert "unit tests: 95 s, of which work: pre-training 50" in out and "test_slow" in out
    assert "book build, book (html): 100 s in all = 40 s executing 1 chapters + 60 s reading and rendering" in out
    assert time_account.build_chapters(book, {"start": t0 + 200, "seconds": 100}) == [("tecoa", t0 + 210, t0 + 250)]


def test_a_build_before_the_tests_is_accounted_and_chapters_checked_from_it_are_counted(time_account, tmp_path, capsys):
    """CI's order: the book build executes the chapters, then the test run checks them from its execution."""
    cache, book = tmp_path / "cache", tmp_path / "book"
    cache.mkdir()
    t0 = 1_800_000_000.0
    (cache / worklog.LOG_FILE).write_text(
        _line("rendering", "book (html)", t0 - 900, 100)  # an earlier build: not the last one, left out
        + _line("fitting", "tecoa", t0 + 20, 30)
        + _line("rendering", "book (html)", t0, 100)
        + _line("pre-training", "zsr-classroom-vit", t0 + 150, 50)
    )
    report = {
        "session": {"start": t0 + 120, "stop": t0 + 300},
        "chapters": {},
        "recorded": ["book/tecoa.ipynb"],
        "unit_tests": 170.0,
        "slowest": {},
    }
    (cache / "nbval_chapters.json").write_text(json.dumps(report))
    _executed_chapter(book, "tecoa", finished=t0 + 60, seconds=50)
    assert time_account.main(["--cache", str(cache), "--book", str(book)]) == 0
    out = capsys.readouterr().out
    assert "test run: 180 s in all\n" in out and "unit tests: 170 s, of which work: pre-training 50" in out
    assert "chapters checked from the book build's execution, not executed again: 1" in out
    assert out.count("book build, book (html)") == 1
    assert "book build, book (html): 100 s in all = 50 s executing 1 chapters" in out


def test_the_account_says_what_to_do_without_a_log(time_account, tmp_path, capsys):
    assert time_account.main(["--cache", str(tmp_path)]) == 1
    assert "no work log" in capsys.readouterr().out
