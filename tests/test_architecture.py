"""The layers of nestegg as a contract: imports flow one way, and no module is left unplaced.

Every ``import`` of every module is read with ast, function bodies included, except those under
``if TYPE_CHECKING:`` (types only, never run). A module may import its own layer and the layers
below it; the packages of the top layer are siblings and import none of each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("nestegg_core", "tox_nestegg")

#: the layers, lowest first: each a list of modules and packages (a package holds all below it)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "nestegg_core._version",
            "nestegg_core.errors",
            "nestegg_core.waits",
            "nestegg_core.signals",
            "nestegg_core.urls",
            "nestegg_core.installers",
        ),
    ),
    ("simple", ("nestegg_core.simple",)),
    ("config", ("nestegg_core.config",)),
    ("storage", ("nestegg_core.storage",)),
    ("index", ("nestegg_core.index",)),
    ("builds", ("nestegg_core.builds",)),
    ("http", ("nestegg_core.http",)),
    ("ui", ("nestegg_core.ui",)),
    ("serve", ("nestegg_core.serve", "nestegg_core.wsgi")),
    ("commands, fixtures and tox", ("nestegg_core.cli", "nestegg_core.testing", "nestegg_core.toxrun")),
    ("entry points", ("nestegg_core", "nestegg_core.__main__", "tox_nestegg")),
]
#: layers whose packages are siblings: none imports another
SIBLINGS = {"commands, fixtures and tox"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports() -> dict[str, dict[str, int]]:
    """Each module's imports of the project's modules, with the line of each."""
    found = modules()
    edges: dict[str, dict[str, int]] = {}
    for module, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skip = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and _type_checking(node)
            for sub in node.body
            for n in ast.walk(sub)
        }
        edges[module] = {}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                if node.level:
                    prefix = f"{base}.{node.module}" if node.module else base
                else:
                    prefix = node.module or ""
                targets = [f"{prefix}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in targets:
                target = name
                while target and target not in found:  # a name imported from a module: the module
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges[module].setdefault(target, node.lineno)
    return edges


def layer_of(module: str) -> int | None:
    """The index of the layer that holds ``module``: the longest package prefix that names one."""
    best: tuple[int, int] | None = None
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            inside = module == member or module.startswith(member + ".")
            if inside and (best is None or len(member) > best[0]):
                best = (len(member), index)
    return None if best is None else best[1]


def sibling(module: str, index: int) -> str:
    """The package of layer ``index`` that holds ``module``."""
    return next(m for m in LAYERS[index][1] if module == m or module.startswith(m + "."))


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in modules() if layer_of(m) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_imports_flow_down_the_layers() -> None:
    wrong = []
    for module, targets in imports().items():
        here = layer_of(module)
        assert here is not None
        for target, line in sorted(targets.items()):
            there = layer_of(target)
            assert there is not None
            name = f"{modules()[module].relative_to(ROOT)}:{line}: {module} imports {target}"
            if there > here:
                wrong.append(f"{name} (layer {LAYERS[here][0]!r} imports the higher {LAYERS[there][0]!r})")
            elif (
                there == here
                and LAYERS[here][0] in SIBLINGS
                and sibling(module, here) != sibling(target, here)
            ):
                wrong.append(f"{name} (siblings of layer {LAYERS[here][0]!r})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    found = cycles(imports())
    assert not found, "import cycles:\n" + "\n".join(", ".join(cycle) for cycle in found)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b": 1}, "b": {}}, []),
        ({"a": {"b": 1}, "b": {"a": 1}}, [["a", "b"]]),
        ({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}, [["a", "b", "c"]]),
    ],
)
def test_cycles_are_found(edges: dict[str, dict[str, int]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("nestegg_core.errors", "base"),
        ("nestegg_core.simple.models", "simple"),
        ("nestegg_core.serve._waitress", "serve"),
        ("nestegg_core.wsgi", "serve"),
        ("nestegg_core.cli", "commands, fixtures and tox"),
        ("nestegg_core", "entry points"),
        ("tox_nestegg.plugin", "entry points"),
    ],
)
def test_layer_of(module: str, layer: str) -> None:
    index = layer_of(module)
    assert index is not None
    assert LAYERS[index][0] == layer
