"""Sphinx extension: remember which package and environment executed each chapter the build ran, so that the
tests can check the build's execution of a chapter instead of executing it a second time.

jupyter-cache keys an execution on the notebook's code only: a chapter whose cells did not change is not executed
again even if ``zsr_lab`` did. That is right for a book build; a test of the chapters must see the package as it
is now. So each execution this build made is recorded under its jupyter-cache hash with the fingerprint of what
else shaped it (the package's files, the installed distributions, the Python version), in
``_build/.jupyter_cache/executed_with.json``. ``tests/conftest.py`` takes a chapter's recorded execution only when
its code and that fingerprint are both unchanged, and then checks its outputs for errors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import time
from datetime import timezone
from importlib import metadata
from pathlib import Path

import nbformat

RECORD = "executed_with.json"
PACKAGE = "zsr_lab"


def environment_fingerprint(package: Path | None = None) -> str:
    """A hash of everything besides a chapter's own cells that shapes its execution: every file of the package
    (code, class names, shipped weights; by default the ``zsr_lab`` a kernel imports), the installed
    distributions and their versions, and the Python version."""
    if package is None:
        package = Path(importlib.util.find_spec(PACKAGE).submodule_search_locations[0])
    digest = hashlib.sha256(sys.version.encode())
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    # a set: a distribution found twice (an editable install's egg-info when the checkout is on sys.path, as it is
    # for pytest and not for the book build) is the same environment
    installed = sorted({f"{dist.metadata['Name']}=={dist.version}" for dist in metadata.distributions()})
    digest.update("\n".join(installed).encode())
    return digest.hexdigest()


def cache_path(root: Path) -> Path:
    """The jupyter-cache of the book in ``root`` built the default way (``jupyter-book build .``)."""
    return root / "_build" / ".jupyter_cache"


def record_executions(cache_dir: Path, since: float, fingerprint: str) -> list[str]:
    """Record ``fingerprint`` for every execution cached at or after ``since`` (a Unix time); returns their URIs."""
    from jupyter_cache import get_cache

    if not cache_dir.exists():
        return []
    path = cache_dir / RECORD
    recorded = json.loads(path.read_text()) if path.exists() else {}
    executed = []
    for record in get_cache(str(cache_dir)).list_cache_records():
        if record.created.replace(tzinfo=timezone.utc).timestamp() >= since:  # jupyter-cache stores UTC
            recorded[record.hashkey] = fingerprint
            executed.append(record.uri)
    path.write_text(json.dumps(recorded, indent=1))
    return executed


def recorded_execution(notebook: Path, cache_dir: Path, fingerprint: str) -> nbformat.NotebookNode | None:
    """The book build's execution of ``notebook`` with its outputs, if the build executed exactly these cells with
    an environment of this ``fingerprint``; else ``None``."""
    from jupyter_cache import get_cache

    path = cache_dir / RECORD
    if not path.exists():
        return None
    cache = get_cache(str(cache_dir))
    source = nbformat.read(notebook, as_version=4)
    try:
        record = cache.match_cache_notebook(source)
    except KeyError:
        return None
    if json.loads(path.read_text()).get(record.hashkey) != fingerprint:
        return None
    return cache.merge_match_into_notebook(source)[1]


def execution_errors(notebook: nbformat.NotebookNode) -> list[str]:
    """Each code cell that raised, or that was due to run and did not: its number, first line and error."""
    problems = []
    for number, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or "skip-execution" in cell.metadata.get("tags", []):
            continue
        first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        errors = [output for output in cell.get("outputs", []) if output.get("output_type") == "error"]
        for error in errors:
            problems.append(f"cell {number} ({first_line!r}): {error.get('ename')}: {error.get('evalue')}")
        if cell.source.strip() and cell.get("execution_count") is None and not errors:
            problems.append(f"cell {number} ({first_line!r}) was not executed")
    return problems


def unrecorded_chapters(root: Path) -> list[str]:
    """The notebooks under ``root/book`` that the tests would execute again: those without a recorded execution
    of their current cells in this environment (the training job aside: the tests run it through papermill)."""
    fingerprint = environment_fingerprint()
    return [
        str(path.relative_to(root))
        for path in sorted((root / "book").glob("*.ipynb"))
        if path.stem != "train_full" and recorded_execution(path, cache_path(root), fingerprint) is None
    ]


def _start(app) -> None:
    app.zsr_lab_execution_start = (time.time(), environment_fingerprint())


def _finish(app, exception) -> None:
    started = getattr(app, "zsr_lab_execution_start", None)
    if started is None or exception is not None:
        return
    since, fingerprint = started
    if environment_fingerprint() == fingerprint:  # nothing changed while the build ran
        record_executions(Path(app.env.mystnb_config.execution_cache_path), since, fingerprint)


def setup(app):
    app.connect("builder-inited", _start)
    app.connect("build-finished", _finish)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":  # CI, after the build: every chapter the tests will check has its execution recorded
    missing = unrecorded_chapters(Path(__file__).resolve().parents[2])
    if missing:
        sys.exit(
            f"no recorded execution in this environment for: {', '.join(missing)} (the tests would run them again)"
        )
    print("every chapter's execution is recorded for the tests")
