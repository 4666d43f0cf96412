"""Where the time goes: a log of the expensive work zsr_lab does, by kind.

Every pre-training, fit, evaluation, measure and figure is timed and appended, one JSON line each, to
``worklog.jsonl`` in the zsr_lab cache (``$ZSR_LAB_CACHE``), with whether it was computed or read from a cache.
Nested work is not counted twice: a record's ``self_seconds`` leaves out the work recorded inside it (the
evaluation inside a fit is "evaluating", not "fitting"). ``.ci/time_account.py`` adds these records up per
chapter and per kind, next to the execution reports of the test run and the book build.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from pathlib import Path

import pandas as pd

from . import settings

KINDS = ("pre-training", "fitting", "evaluating", "measuring", "drawing", "rendering")  # rendering: the book build
LOG_FILE = "worklog.jsonl"

_open = threading.local()  # the stack of records being timed in this thread


def log_path() -> Path:
    return settings.cache_dir() / LOG_FILE


class Work:
    """One timed piece of work; set ``cached = True`` inside the block when the result was only read."""

    def __init__(self, kind: str, what: str):
        _check_kind(kind)
        self.kind, self.what, self.cached = kind, what, False
        self.inner_seconds = 0.0


@contextlib.contextmanager
def work(kind: str, what: str):
    """Time the block as ``kind`` of work on ``what`` and append it to the log (also when the block raises).

    Examples::
        >>> with work("measuring", "red flags") as record:
        ...     record.cached = found_in_cache
    """
    record = Work(kind, what)
    stack = _open.__dict__.setdefault("stack", [])
    stack.append(record)
    start, begun = time.time(), time.perf_counter()
    try:
        yield record
    finally:
        seconds = time.perf_counter() - begun
        stack.pop()
        if stack:
            stack[-1].inner_seconds += seconds
        _append(
            {
                "kind": kind,
                "what": what,
                "start": round(start, 3),
                "seconds": round(seconds, 3),
                "self_seconds": round(max(0.0, seconds - record.inner_seconds), 3),
                "cached": record.cached,
                "depth": len(stack),
                "pid": os.getpid(),
            }
        )


def timed(kind: str, what: str | None = None):
    """Decorator form of :func:`work`, named after the function unless ``what`` is given."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with work(kind, what or function.__name__):
                return function(*args, **kwargs)

        return wrapper

    return decorate


def record_span(kind: str, what: str, start: float, seconds: float) -> None:
    """Log work timed elsewhere (the book build, timed by a Sphinx extension from its first to its last event);
    its ``self_seconds`` are its seconds (``.ci/time_account.py`` takes the chapters' execution out of it)."""
    _check_kind(kind)
    record = {"kind": kind, "what": what, "start": round(start, 3), "seconds": round(seconds, 3)}
    _append({**record, "self_seconds": record["seconds"], "cached": False, "depth": 0, "pid": os.getpid()})


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind of work {kind!r}; the kinds are {', '.join(KINDS)}")


def _append(record: dict) -> None:
    """One line per record, appended in one write: lines from parallel processes do not interleave."""
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as log:
            log.write(json.dumps(record) + "\n")
    except OSError:  # a read-only cache must not stop the work it times
        pass


def read_worklog(path=None) -> pd.DataFrame:
    """The log as a table (empty when nothing was logged); a line cut short by a crash is skipped."""
    path = Path(path) if path is not None else log_path()
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    columns = ["kind", "what", "start", "seconds", "self_seconds", "cached", "depth", "pid"]
    return pd.DataFrame(records, columns=columns)
