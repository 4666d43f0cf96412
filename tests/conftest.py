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


def pytest_collection_modifyitems(items):
    """Run the chapters in the book's order, after the unit tests: later chapters (the comparison) reuse the
    cached runs of earlier ones, as they do for a reader. The chapters' cells are marked ``book`` (the fast tier,
    ``-m "not book and not slow"``, leaves them out)."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.book)
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "book" / "_ext"))
    from book_order import toc_files

    order = {str(root / f"{page}.ipynb"): i for i, page in enumerate(toc_files(root / "_toc.yml"))}
    items.sort(key=lambda item: order.get(str(item.path), -1))  # stable: unit tests first, cells keep their order


def pytest_terminal_summary(terminalreporter):
    """Time per chapter, every phase of every cell (the teaching page quotes these from a CI run), also written
    with each chapter's start and end, the unit tests' total and the slowest of them to ``nbval_chapters.json``
    in the zsr_lab cache, where ``.ci/time_account.py`` reads them. From the reporter's records: hooks of this
    conftest do not see the items under book/."""
    chapters: dict[str, dict] = {}
    unit_tests: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            nodeid = getattr(report, "nodeid", "")
            if nodeid.startswith("tests/") and getattr(report, "when", None):
                unit_tests[nodeid] = unit_tests.get(nodeid, 0.0) + report.duration
            if ".ipynb::" in nodeid and getattr(report, "when", None):  # run, not deselected
                chapter = chapters.setdefault(nodeid.split("::")[0], {"seconds": 0.0, "start": report.start})
                chapter["seconds"] += report.duration
                chapter["start"] = min(chapter["start"], report.start)
                chapter["stop"] = max(chapter.get("stop", report.stop), report.stop)
    if chapters:
        terminalreporter.section("time per chapter (nbval, in book order)")
        for name, chapter in chapters.items():
            terminalreporter.write_line(f"{name}: {chapter['seconds']:.0f} s")
        session = {"start": SESSION_START, "stop": time.time()}
        slowest = dict(sorted(unit_tests.items(), key=lambda item: -item[1])[:25])
        report = {"session": session, "chapters": chapters, "unit_tests": sum(unit_tests.values()), "slowest": slowest}
        (zl.settings.cache_dir() / NBVAL_CHAPTERS).write_text(json.dumps(report))
