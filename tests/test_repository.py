"""The repository keeps its promises to a newcomer: README commands are what CI runs, the book lists its chapters."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    commands = [line for block in blocks for line in block.splitlines()
                if line.strip() and not line.startswith("#") and line.startswith("bash .ci/setup")]
    return commands


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_both():
    commands = _readme_commands()
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci, command
    assert "HF_HUB_OFFLINE=1" in ci


def test_every_chapter_in_the_toc_exists_and_every_notebook_is_in_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = {toc["root"]} | {chapter["file"] for chapter in toc["chapters"]}
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
        headings = [line for cell in notebook.cells if cell.cell_type == "markdown"
                    for line in cell.source.splitlines() if line.startswith("## ")]
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
        text = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown")
        exercises = re.findall(r"```\{exercise\}\n:label: (\S+)", text)
        solutions = dict(re.findall(r"```\{solution-start\} (\S+)\n:class: (\S+)", text))
        assert len(exercises) == len(set(exercises)), path.name
        assert path.stem == "train_full" or len(exercises) >= 2, f"{path.name}: a chapter ends with exercises"
        for label in exercises:
            assert solutions.get(label) == "dropdown", f"{path.name}: exercise {label} has no dropdown solution"
        assert text.count("{solution-start}") == text.count("{solution-end}"), path.name
