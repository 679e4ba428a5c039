"""The package's structure: no import cycles, no upward imports, no source file over 400 lines.

The import graph is built with ``ast`` over every ``rpo_verl/**/*.py`` file, from module-level
*and* function-level imports (``TYPE_CHECKING`` blocks included: a type-only import is still an
arrow in the drawing). A node is a module (a file); ``import a.b.c`` / ``from a.b import c`` is an
edge to the deepest module of the package that the name resolves to. Names in strings (the
``FEATURES`` registry's ``"module:attr"`` references, verl's ``_target_``/``pkg://`` strings) are
not edges: that is how a lower layer reaches a feature without depending on it.

``LAYERS`` maps a module prefix to its floor (the longest matching prefix wins); a module may
import modules on its own floor or below, never above. To place a new module, add its prefix
(or nothing, when its package's prefix already says where it belongs). See docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rpo_verl"
MAX_LINES = 400

# Floors, bottom (0) to top. Longest prefix wins, e.g. rpo_verl.config.checks (the start-up check
# runner, which asks rollout/backends/data and the feature registry) sits above rpo_verl.config
# (validation, Problem, the registry itself), which every layer may use.
LAYERS: dict[str, int] = {
    # 0: shared types and helpers
    "rpo_verl.utils": 0,
    "rpo_verl.config": 0,  # validation (ConfigError), problems (Problem), features (FEATURES registry)
    # 1: generic building blocks (no feature, no trainer)
    "rpo_verl.models": 1,
    "rpo_verl.data": 1,  # incl. data.checks (start-up data checks)
    "rpo_verl.reward": 1,
    "rpo_verl.rollout": 1,  # incl. rollout.hf and rollout.vllm_cpu*
    "rpo_verl.backends": 1,  # incl. backends.cpu.checks
    # 2: contracts between the generic layers and the features: the start-up check runner
    # (config.checks asks the layers below and the registry) and the trainer hook interface that
    # features implement (trainer.extension: types the trainer as a Protocol, imports no trainer)
    "rpo_verl.config.checks": 2,
    "rpo_verl.trainer.extension": 2,
    # 3: features (each its own folder; they never import each other)
    "rpo_verl.rpo": 3,
    "rpo_verl.dps": 3,
    "rpo_verl.r2vpo": 3,
    # 4: the trainer (hook points, launch, task runner, console, metrics file, summary)
    "rpo_verl.trainer": 4,
    # 5: entry points and offline tools
    "rpo_verl.viz": 5,
    "rpo_verl.main": 5,
    "rpo_verl.plugin": 5,
    "rpo_verl": 5,  # the package's __init__ (plugin entry) and anything not listed above
}
FEATURE_PACKAGES = ("rpo_verl.rpo", "rpo_verl.dps", "rpo_verl.r2vpo")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The deepest module of the package that ``name`` (a module or module.attribute) is in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, path: Path, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative import
            parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        names = [f"{base}.{alias.name}" for alias in node.names]
    found = []
    for name in names:
        if name == "rpo_verl" or name.startswith("rpo_verl."):
            target = _resolve(name)
            if target and target != module:
                found.append(target)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, path, node):
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


def _feature_of(module: str) -> str | None:
    return next((f for f in FEATURE_PACKAGES if module == f or module.startswith(f + ".")), None)


# ----------------------------------------------------------------------------- the checks themselves


def test_graph_sees_function_level_and_type_checking_imports():
    source = "def f():\n    from rpo_verl.config.validation import ConfigError\nif 0:\n    import rpo_verl.utils\n"
    tree = ast.parse(source)
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    targets = [t for n in nodes for t in _targets("rpo_verl.trainer.launch", PACKAGE / "x.py", n)]
    assert targets == ["rpo_verl.config.validation", "rpo_verl.utils"]


def test_cycle_finder_finds_a_circle_and_ignores_a_chain():
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_every_module_has_a_floor():
    assert layer("rpo_verl.config.checks") == 2 and layer("rpo_verl.config.validation") == 0
    assert layer("rpo_verl.rpo.cache_store") == 3 and layer("rpo_verl.trainer.console") == 4
    assert all(isinstance(layer(m), int) for m in MODULES)


# ----------------------------------------------------------------------------- the package


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    described = []
    for component in found:
        arrows = [f"{a} -> {b} ({_where(a, line)})" for a in component for b, line in graph[a].items()
                  if b in component]
        described.append("; ".join(arrows))
    assert not found, "import cycles:\n  " + "\n  ".join(described)


def test_no_upward_imports():
    upward = [
        f"{_where(module, line)}: {module} (floor {layer(module)}) imports {target} (floor {layer(target)})"
        for module, edges in import_graph().items()
        for target, line in edges.items()
        if layer(target) > layer(module)
    ]
    assert not upward, "imports from a lower layer into a higher one:\n  " + "\n  ".join(upward)


def test_features_do_not_import_each_other():
    crossing = [
        f"{_where(module, line)}: {module} imports {target}"
        for module, edges in import_graph().items()
        for target, line in edges.items()
        if _feature_of(module) and _feature_of(target) and _feature_of(module) != _feature_of(target)
    ]
    assert not crossing, "a feature imports another feature:\n  " + "\n  ".join(crossing)


def test_generic_layers_never_import_a_feature():
    """config/ and trainer/ (and everything below them) reach features only through FEATURES'
    "module:attr" strings; only the entry points (floor 5) may name a feature directly."""
    found = [
        f"{_where(module, line)}: {module} imports {target}"
        for module, edges in import_graph().items()
        for target, line in edges.items()
        if not _feature_of(module) and layer(module) < 5 and _feature_of(target)
    ]
    assert not found, "a generic layer imports a feature:\n  " + "\n  ".join(found)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_source_file_is_at_most_400_lines(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {lines} lines (at most {MAX_LINES}): " \
                               "split it by responsibility"
