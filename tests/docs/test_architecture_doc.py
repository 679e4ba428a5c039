"""docs/architecture.md stays true: every module, file and folder it names exists."""

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")

# Dotted names (rpo_verl.x.y, verl.x.y) and repository paths (rpo_verl/..., tests/..., docs/...).
DOTTED = sorted(set(re.findall(r"(?<![\w/.])((?:rpo_verl|verl)(?:\.\w+)+)", DOC)))
PATHS = sorted(set(re.findall(r"(?<![\w.])((?:rpo_verl|tests|docs|scripts|recipes)/[\w./<>-]*[\w/])", DOC)))


def _module_file(dotted: str) -> Path | None:
    base = ROOT / Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_the_page_names_modules_and_files():
    assert len(DOTTED) > 30 and len(PATHS) > 10
    for box in ("rpo_verl.trainer.task_runner", "rpo_verl.rpo.cache_service", "rpo_verl.dps.scheduler",
                "rpo_verl.rollout.hf.server", "rpo_verl.rpo.agent_loop", "rpo_verl.reward.score",
                "rpo_verl.r2vpo.worker"):
        assert box in DOTTED  # the drawing's actors
    assert "```mermaid" in DOC and "sequenceDiagram" in DOC and "add a fourth method" in DOC


@pytest.mark.parametrize("name", [n for n in DOTTED if n.startswith("rpo_verl")])
def test_named_rpo_verl_module_exists(name):
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        path = _module_file(".".join(parts[:cut]))
        if path is not None:
            rest = parts[cut:]
            assert len(rest) <= 1, f"{name}: {'.'.join(rest)} is not a module of {'.'.join(parts[:cut])}"
            if rest:
                assert rest[0] in _top_level_names(path), f"{name}: {path.relative_to(ROOT)} defines no {rest[0]}"
            return
    pytest.fail(f"{name}: no such module in rpo_verl/")


@pytest.mark.parametrize("name", [n for n in DOTTED if n.startswith("verl.")])
def test_named_verl_module_exists(name):
    assert importlib.util.find_spec(name) is not None, f"verl has no module {name}"


@pytest.mark.parametrize("path", PATHS)
def test_named_path_exists(path):
    if "<" in path:  # a pattern such as rpo_verl/<name>/: its parent must exist
        path = path.split("<")[0]
    assert (ROOT / path).exists(), f"{path} does not exist"
