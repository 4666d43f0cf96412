"""book/_ext/recorded_executions.py: the tests check a chapter from the book build's execution only when its cells,
the package and the environment are the ones that execution ran on."""

import sys
from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
import recorded_executions  # noqa: E402


def _chapter(path: Path, second_cell: str = "print(x)") -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    notebook.cells = [nbformat.v4.new_markdown_cell("# A chapter"), nbformat.v4.new_code_cell("x = 1")]
    notebook.cells.append(nbformat.v4.new_code_cell(second_cell))
    nbformat.write(notebook, path)
    return notebook


def _executed(notebook: nbformat.NotebookNode, error: bool = False) -> nbformat.NotebookNode:
    executed = nbformat.from_dict(notebook)
    for count, cell in enumerate(executed.cells[1:], start=1):
        cell.execution_count = count
    last = executed.cells[-1]
    if error:
        last.outputs = [nbformat.v4.new_output("error", ename="NameError", evalue="name 'y' is not defined")]
    else:
        last.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    return executed


def _build(cache_dir: Path, path: Path, executed: nbformat.NotebookNode, fingerprint: str) -> list[str]:
    """What a build does: jupyter-cache stores the execution, the extension records what it ran on."""
    get_cache(str(cache_dir)).cache_notebook_bundle(CacheBundleIn(executed, str(path)), check_validity=False)
    return recorded_executions.record_executions(cache_dir, 0.0, fingerprint)


def test_a_recorded_execution_is_used_only_for_the_same_cells_and_environment(tmp_path):
    path, cache_dir = tmp_path / "chapter.ipynb", tmp_path / ".jupyter_cache"
    notebook = _chapter(path)
    assert recorded_executions.recorded_execution(path, cache_dir, "env A") is None  # no build yet
    assert _build(cache_dir, path, _executed(notebook), "env A") == [str(path)]
    executed = recorded_executions.recorded_execution(path, cache_dir, "env A")
    assert executed.cells[2].outputs[0]["text"] == "1\n"
    assert recorded_executions.execution_errors(executed) == []
    assert recorded_executions.recorded_execution(path, cache_dir, "env B") is None  # the package changed
    _chapter(path, second_cell="print(x + 1)")
    assert recorded_executions.recorded_execution(path, cache_dir, "env A") is None  # the chapter changed


def test_errors_and_cells_that_did_not_run_are_reported_with_the_cell(tmp_path):
    path, cache_dir = tmp_path / "chapter.ipynb", tmp_path / ".jupyter_cache"
    notebook = _chapter(path, second_cell="print(y)")
    _build(cache_dir, path, _executed(notebook, error=True), "env")
    executed = recorded_executions.recorded_execution(path, cache_dir, "env")
    assert recorded_executions.execution_errors(executed) == ["cell 2 ('print(y)'): NameError: name 'y' is not defined"]
    executed.cells[1].execution_count = None
    assert "cell 1 ('x = 1') was not executed" in recorded_executions.execution_errors(executed)
    executed.cells[1].metadata["tags"] = ["skip-execution"]  # the build skips it on purpose
    assert len(recorded_executions.execution_errors(executed)) == 1


def test_the_fingerprint_follows_the_package_files(tmp_path):
    package = tmp_path / "zsr_lab"
    package.mkdir()
    (package / "module.py").write_text("A = 1\n")
    first = recorded_executions.environment_fingerprint(package)
    assert recorded_executions.environment_fingerprint(package) == first
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "module.cpython-311.pyc").write_bytes(b"compiled")
    assert recorded_executions.environment_fingerprint(package) == first  # byte code is not the package
    (package / "module.py").write_text("A = 2\n")
    assert recorded_executions.environment_fingerprint(package) != first


def test_a_distribution_found_twice_on_the_path_is_the_same_environment(tmp_path, monkeypatch):
    """pytest puts the checkout on sys.path, where an editable install leaves its egg-info; the build does not."""
    from importlib import metadata

    package = tmp_path / "zsr_lab"
    package.mkdir()
    (package / "module.py").write_text("A = 1\n")
    first = recorded_executions.environment_fingerprint(package)
    name = "pytest"  # any installed distribution, seen a second time
    copy = tmp_path / "path" / f"{name}-{metadata.version(name)}.dist-info"
    copy.mkdir(parents=True)
    (copy / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {metadata.version(name)}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "path"))
    assert recorded_executions.environment_fingerprint(package) == first
