"""The package's shape: no import cycles, loss modules independent of the engines, no private names across
modules, one registry type with close-match hints."""

import ast
from pathlib import Path

import pytest

import zsr_lab as zl
from zsr_lab.registry import Registry, UnknownNameError

PACKAGE = Path(zl.__file__).parent
# the README's layout, top to bottom: a module imports only from its own layer and the layers above it
LAYERS = (
    ("settings", "registry", "progress", "precision", "distributed", "uncertainty", "worklog", "memo"),
    ("models", "weights", "classroom_data", "scenes", "datasets", "classroom", "pretrained", "classifier"),
    ("attack_base", "attacks", "apgd", "suites", "protocol", "scales"),
    ("attention", "tima", "methods"),
    ("ledger", "evaluate", "recipes", "checkpoints", "engine", "sweeps", "train", "attention_measures"),
    (
        "plots",
        "claims",
        "explorer",
        "reported",
        "board",
        "export",
        "sanity",
        "defences",
        "adaptive",
        "grader",
        "challenge",
        "speed",
        "speed_suites",
        "speed_training",
    ),
)
LOSS_MODULES = ("methods", "attention", "tima")
ENGINES = ("evaluate", "engine", "sweeps", "train", "recipes", "checkpoints", "attention_measures")


def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}


def _imports(tree: ast.Module) -> list[tuple[str, str]]:
    """(imported module, name) for every import of a zsr_lab module, at any depth (also inside functions)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("zsr_lab")):
            module = (node.module or "").removeprefix("zsr_lab").lstrip(".")
            for alias in node.names:
                if module:
                    found.append((module.split(".")[0], alias.name))
                else:  # from . import datasets
                    found.append((alias.name, ""))
        elif isinstance(node, ast.Import):
            found += [(a.name.split(".")[1], "") for a in node.names if a.name.startswith("zsr_lab.")]
    return found


def import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    return {
        name: {target for target, _ in _imports(tree) if target in modules and target != "__init__"}
        for name, tree in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, as the modules on it (depth-first search for back edges)."""
    found, state, path = [], {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycles():
    assert cycles(import_graph(_modules())) == []


def test_every_module_sits_in_a_layer_and_imports_nothing_below_it():
    graph = import_graph(_modules())
    level = {module: depth for depth, layer in enumerate(LAYERS) for module in layer}
    assert set(graph) - {"__init__"} == set(level)
    upward = [
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module in level
        for target in targets
        if level[target] > level[module]
    ]
    assert upward == []


@pytest.mark.parametrize("loss_module", LOSS_MODULES)
def test_loss_modules_import_neither_engine(loss_module):
    graph = import_graph(_modules())
    assert loss_module in graph
    assert reachable(graph, loss_module) & set(ENGINES) == set()


def test_no_private_name_is_imported_or_read_across_modules():
    """Package modules neither import nor read another module's private names; tests import none either (a test
    may still reach into the module it tests, as a white-box test)."""
    offences = []
    test_files = {path.stem: ast.parse(path.read_text()) for path in Path(__file__).parent.glob("test_*.py")}
    for name, tree in {**_modules(), **test_files}.items():
        offences += [
            f"{name}: from {module} import {imported}"
            for module, imported in _imports(tree)
            if imported.startswith("_") and not imported.startswith("__")
        ]
    for name, tree in _modules().items():
        offences += [f"{name}: {attribute}" for attribute in _private_reads(tree)]
    assert offences == []


def _private_reads(tree: ast.Module) -> list[str]:
    """``module._name`` where ``module`` is a zsr_lab module imported by ``from . import module``."""
    modules = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module
        for alias in node.names
    }
    return [
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in modules
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]


def test_the_structure_checks_catch_an_offence():
    tree = ast.parse("from .evaluate import _frozen\nfrom . import train\n\ndef f():\n    return train._Step\n")
    assert ("evaluate", "_frozen") in _imports(tree) and ("train", "") in _imports(tree)
    assert _private_reads(tree) == ["train._Step"]


REGISTRIES = {
    "method": (lambda: zl.methods.METHODS, "tecoo", "tecoa"),
    "attack": (lambda: zl.attacks.ATTACKS, "apgd_tt", "apgd_t"),
    "suite": (lambda: zl.suites.SUITES, "aa-standad", "aa-standard"),
    "dataset": (lambda: zl.datasets.DATASETS, "cifar-10", "cifar10"),
    "scale": (lambda: zl.scales.SCALES, "clasroom", "classroom"),
    "published checkpoint": (lambda: zl.weights.PUBLISHED, "robustvlm-fare-eps-1", "robustvlm-fare-eps1"),
    "classroom CLIP": (lambda: zl.classroom.PRETRAINING, "zsr-classroom-vti", "zsr-classroom-vit"),
}


@pytest.mark.parametrize("kind", REGISTRIES)
def test_every_registry_is_one_type_and_hints_the_closest_name(kind):
    registry, typo, meant = REGISTRIES[kind]
    registry = registry()
    assert isinstance(registry, Registry) and registry.kind == kind
    with pytest.raises(UnknownNameError, match=f"unknown {kind} '{typo}' \\(did you mean '{meant}'") as error:
        registry[typo]
    assert isinstance(error.value, ValueError) and all(name in str(error.value) for name in registry)


def test_the_lookups_of_the_api_answer_with_the_registry_hint():
    for lookup, typo, meant in (
        (zl.methods.build_method, "fare2", "fare"),
        (zl.get_spec, "dtd2", "dtd"),
        (zl.get_scale, "ful", "full"),
        (zl.attacks.parse_attack, "cww-10", "cw"),
    ):
        with pytest.raises(ValueError, match=f"did you mean '{meant}'"):
            lookup(typo)
    assert zl.pretrained.known_tags("zsr-classroom-vit").close_matches("zsr-lab") == ["zsr_lab"]


def test_a_registry_refuses_a_second_entry_of_a_name():
    registry = Registry("thing", {"a": 1})
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a", 2)
    assert registry.get("b") is None and "a" in registry and list(registry) == ["a"]
    registry["b"] = 3  # replacing or adding by item, as monkeypatch.setitem does
    assert registry.filter(lambda entry: entry > 1) == ["b"]
    del registry["b"]
    with pytest.raises(UnknownNameError, match="unknown thing 'b'"):
        del registry["b"]
