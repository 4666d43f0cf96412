"""The repository keeps its promises to a newcomer: README commands are what CI runs, the book lists its chapters."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    commands = [
        line
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.startswith("#") and line.startswith("bash .ci/setup")
    ]
    return commands


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_both():
    commands = _readme_commands()
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci, command
    assert "HF_HUB_OFFLINE=1" in ci


def test_ci_stops_at_any_failing_step():
    """set -e does not stop at a failing command of an && list unless it is the last: a lint error once passed CI."""
    lines = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    unguarded = [line for line in lines if " && " in line and not line.startswith(("(", "if ")) and "|| " not in line]
    assert "set -euo pipefail" in lines and not unguarded, unguarded


def test_every_chapter_in_the_toc_exists_and_every_notebook_is_in_the_toc():
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    from book_order import toc_files

    listed = set(toc_files(ROOT / "_toc.yml"))
    for entry in listed:
        assert list(ROOT.glob(f"{entry}.*")), entry
    notebooks = {str(p.relative_to(ROOT).with_suffix("")) for p in (ROOT / "book").glob("*.ipynb")}
    assert notebooks <= listed


def test_chapters_end_with_summary_and_exercises_and_have_a_parameters_cell():
    import nbformat

    for path in (ROOT / "book").glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        tags = [cell.metadata.get("tags", []) for cell in notebook.cells]
        assert sum("parameters" in t for t in tags) == 1, path.name
        assert not any(cell.get("outputs") for cell in notebook.cells), f"{path.name}: commit notebooks without outputs"
        if path.stem == "train_full":  # the training job, not a chapter
            continue
        headings = [
            line
            for cell in notebook.cells
            if cell.cell_type == "markdown"
            for line in cell.source.splitlines()
            if line.startswith("## ")
        ]
        assert headings[-2:] == ["## Summary", "## Exercises"], path.name


def test_every_notebook_installs_the_package_in_colab_without_reinstalling_torch():
    import nbformat

    for path in (ROOT / "book").glob("*.ipynb"):
        cells = nbformat.read(path, as_version=4).cells
        first_code = [cell for cell in cells if cell.cell_type == "code"][:2]
        assert "parameters" in first_code[0].metadata.get("tags", []), path.name
        install = first_code[1].source  # right after the parameters, before anything imports zsr_lab
        assert 'if "google.colab" in sys.modules' in install, path.name
        pip_lines = [line for line in install.splitlines() if "pip install" in line]
        assert len(pip_lines) == 1 and "zsr_lab @ git+" in pip_lines[0], path.name
        assert not re.search(r"\btorch(vision)?\b", pip_lines[0].replace("zsr_lab", "")), path.name


def test_every_exercise_has_a_dropdown_solution():
    import nbformat

    for path in (ROOT / "book").glob("*.ipynb"):
        text = "\n".join(
            cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown"
        )
        exercises = re.findall(r"```\{exercise\}\n:label: (\S+)(\n:class: open)?", text)
        solutions = dict(re.findall(r"```\{solution-start\} (\S+)\n:class: (\S+)", text))
        labels = [label for label, _ in exercises]
        assert len(labels) == len(set(labels)), path.name
        assert path.stem == "train_full" or len(labels) >= 2, f"{path.name}: a chapter ends with exercises"
        for label, is_open in exercises:  # an open exercise (the challenge's own) has no solution to hide
            expected = None if is_open else "dropdown"
            assert solutions.get(label) == expected, f"{path.name}: exercise {label}: solution {solutions.get(label)}"
        assert text.count("{solution-start}") == text.count("{solution-end}"), path.name


def _set_repository():
    import importlib.util

    spec = importlib.util.spec_from_file_location("set_repository", ROOT / ".ci" / "set_repository.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _repositories_named(root: Path) -> set[str]:
    """Every GitHub repository the README and the chapters' install cells name."""
    texts = [(root / "README.md").read_text(), *(p.read_text() for p in (root / "book").glob("*.ipynb"))]
    found = set()
    for text in texts:
        found |= set(re.findall(r"git\+(https://github\.com/[\w.-]+/[\w.-]+?)(?:\.git)?[\"\\@ ]", text))
        found |= {
            f"https://github.com/{r}"
            for r in re.findall(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/", text)
        }
    return found


def test_the_repository_is_set_in_one_place_and_everything_names_it():
    url, branch = _set_repository().current_repository(ROOT)
    assert _repositories_named(ROOT) == {url}
    assert f"/blob/{branch}/" in (ROOT / "README.md").read_text()


def test_set_repository_moves_every_mention_to_the_new_repository(tmp_path):
    import shutil

    for name in ("_config.yml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("_build", "_ext"))
    tool = _set_repository()
    changed = tool.set_repository("https://github.com/a-reader/zsr_lab-fork", "teaching", tmp_path)
    assert tmp_path / "_config.yml" in changed and tmp_path / "README.md" in changed
    assert tool.current_repository(tmp_path) == ("https://github.com/a-reader/zsr_lab-fork", "teaching")
    assert _repositories_named(tmp_path) == {"https://github.com/a-reader/zsr_lab-fork"}
    assert "/blob/teaching/book/zero_shot_clip.ipynb" in (tmp_path / "README.md").read_text()
    assert tool.main(["https://gitlab.com/a/b"]) == 2  # Colab opens notebooks from GitHub only


# What a Colab runtime has installed (the five packages a user would not want changed), recent Colab versions
COLAB_PREINSTALLED = {
    "torch": "2.9.0",
    "torchvision": "0.24.0",
    "requests": "2.32.4",
    "numpy": "2.0.2",
    "pandas": "2.2.2",
}


@pytest.mark.slow
def test_installing_the_package_in_colab_changes_none_of_colabs_packages(tmp_path):
    """The chapters' Colab cell installs the package into an environment that has these versions: pip must
    resolve the package with every one of them kept (torchattacks' requests~=2.25.1 pin once forced requests,
    urllib3 and idna down)."""
    import json
    import subprocess
    import sys

    constraints = tmp_path / "colab.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in COLAB_PREINSTALLED.items()))
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--disable-pip-version-check",
            "--report",
            str(report),
            "-c",
            str(constraints),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode and "No matching distribution" in done.stderr and "Could not find" in done.stderr:
        pytest.skip(f"no package index reachable: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-2000:]
    chosen = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    for name, version in COLAB_PREINSTALLED.items():
        assert chosen.get(name, version) == version, (name, chosen.get(name))
    assert "torchattacks" not in chosen and "pyautoattack" in chosen
