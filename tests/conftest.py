"""Test set-up: offline hub, and a fresh cache and data root for the session unless the caller set them.

The classroom CLIPs come with the package (a slow test retrains them and checks the shipped files are what the
code produces); a fresh cache means every run, evaluation and measure is computed anew. Set ZSR_LAB_CACHE to reuse a
cache while iterating.
"""

import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub
_session_dir = tempfile.mkdtemp(prefix="zsr_lab_tests_")
atexit.register(shutil.rmtree, _session_dir, ignore_errors=True)
os.environ.setdefault("ZSR_LAB_CACHE", os.path.join(_session_dir, "cache"))
os.environ.setdefault("ZSR_LAB_DATA", os.path.join(_session_dir, "data"))

import pytest  # noqa: E402
import torch  # noqa: E402

import zsr_lab as zl  # noqa: E402
from zsr_lab.models import CLASSROOM_MODEL, CLASSROOM_SCENES_MODEL  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
import book_order  # noqa: E402
import recorded_executions  # noqa: E402

NBVAL_CHAPTERS = "nbval_chapters.json"  # each chapter's time in this test run, for .ci/time_account.py
SESSION_START = time.time()


@pytest.fixture(autouse=True)
def close_figures():
    """Close every figure a test opened: pyplot keeps them all, and tests of figures make many."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="session")
def classroom_clip():
    """The pre-trained classroom CLIP (the package's shipped weights)."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return zl.load_clip(CLASSROOM_MODEL, "zsr_lab", device="cpu")


@pytest.fixture(scope="session")
def scenes_clip():
    """The pre-trained scenes CLIP (the package's shipped weights; the chapters that measure where the models
    look use it)."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return zl.load_clip(CLASSROOM_SCENES_MODEL, "zsr_lab", device="cpu")


@pytest.fixture()
def random_classroom_clip():
    """The classroom architecture with random weights: fast, for shape and wiring tests."""
    torch.manual_seed(0)
    return zl.load_clip(CLASSROOM_MODEL, None, device="cpu")


def pytest_addoption(parser):
    parser.addoption(
        "--execute-chapters",
        action="store_true",
        help="execute every chapter under nbval, even one the book build in this clone executed with the same "
        "cells, package and environment (by default its recorded execution is checked instead)",
    )


class RecordedChapter(pytest.Item):
    """A chapter that the book build in this clone executed with exactly its current cells, package and
    environment (book/_ext/recorded_executions.py): the recorded outputs are checked for errors instead of
    executing the chapter a second time."""

    NAME = "executed by the book build"

    def __init__(self, *, notebook, **kwargs):
        super().__init__(**kwargs)
        self.notebook = notebook

    def runtest(self):
        problems = recorded_executions.execution_errors(self.notebook)
        assert not problems, f"{self.path.name}, as the book build executed it: " + "; ".join(problems)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}: the book build's execution"


def pytest_collection_modifyitems(session, config, items):
    """Run the chapters in the book's order, after the unit tests: later chapters (the comparison) reuse the
    cached runs of earlier ones, as they do for a reader. A chapter that the book build in this clone already
    executed with the same cells, package and environment is checked from that execution instead of executed
    again (``--execute-chapters`` executes it anyway). The chapters are marked ``book`` (the fast tier,
    ``-m "not book and not slow"``, leaves them out)."""
    root = Path(__file__).resolve().parents[1]
    chapters: dict[Path, list] = {}
    for item in items:
        if item.path.suffix == ".ipynb":
            chapters.setdefault(item.path, []).append(item)
    if chapters and not config.getoption("execute_chapters"):
        fingerprint = recorded_executions.environment_fingerprint()
        for path, cells in chapters.items():
            executed = recorded_executions.recorded_execution(path, recorded_executions.cache_path(root), fingerprint)
            if executed is not None:
                for cell in cells:
                    items.remove(cell)
                nodeid = f"{path.relative_to(root)}::{RecordedChapter.NAME}"
                items.append(
                    RecordedChapter.from_parent(
                        session, name=RecordedChapter.NAME, path=path, nodeid=nodeid, notebook=executed
                    )
                )
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.book)
    order = {str(root / f"{page}.ipynb"): i for i, page in enumerate(book_order.toc_files(root / "_toc.yml"))}
    items.sort(key=lambda item: order.get(str(item.path), -1))  # stable: unit tests first, cells keep their order


def pytest_terminal_summary(terminalreporter):
    """Time per chapter, every phase of every cell (the teaching page quotes these from a CI run), also written
    with each chapter's start and end, the unit tests' total, the slowest of them and the chapters checked from the
    book build's execution to ``nbval_chapters.json`` in the zsr_lab cache, where ``.ci/time_account.py`` reads
    them. From the reporter's records: hooks of this conftest do not see the items under book/."""
    chapters: dict[str, dict] = {}
    recorded: list[str] = []
    unit_tests: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            nodeid = getattr(report, "nodeid", "")
            if not getattr(report, "when", None):  # deselected
                continue
            if nodeid.startswith("tests/"):
                unit_tests[nodeid] = unit_tests.get(nodeid, 0.0) + report.duration
            elif nodeid.endswith(f"::{RecordedChapter.NAME}"):
                if report.when == "call":
                    recorded.append(nodeid.split("::")[0])
            elif ".ipynb::" in nodeid:
                chapter = chapters.setdefault(nodeid.split("::")[0], {"seconds": 0.0, "start": report.start})
                chapter["seconds"] += report.duration
                chapter["start"] = min(chapter["start"], report.start)
                chapter["stop"] = max(chapter.get("stop", report.stop), report.stop)
    if chapters:
        terminalreporter.section("time per chapter (nbval, in book order)")
        for name, chapter in chapters.items():
            terminalreporter.write_line(f"{name}: {chapter['seconds']:.0f} s")
    if recorded:
        terminalreporter.section("chapters checked from the book build's execution (--execute-chapters runs them)")
        terminalreporter.write_line(", ".join(recorded))
    if chapters or recorded:
        session = {"start": SESSION_START, "stop": time.time()}
        slowest = dict(sorted(unit_tests.items(), key=lambda item: -item[1])[:25])
        report = {
            "session": session,
            "chapters": chapters,
            "recorded": recorded,
            "unit_tests": sum(unit_tests.values()),
            "slowest": slowest,
        }
        zl.settings.cache_dir().mkdir(parents=True, exist_ok=True)
        (zl.settings.cache_dir() / NBVAL_CHAPTERS).write_text(json.dumps(report))
