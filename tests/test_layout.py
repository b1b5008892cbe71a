"""The package keeps one direction: sources -> normalise -> warehouse -> analysis -> report; ingest, cli on top.

Each third-party library with a job of its own is imported in one place only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pipeline"

# stage rank: a module may import only pipeline modules of a lower or equal rank
RANK = {
    "errors": 0, "config": 0, "schema": 0, "workers": 0,
    "sources": 1, "normalise": 2, "warehouse": 3, "analysis": 4, "report": 5,
    "simulate": 1, "ingest": 6, "cli": 7, "__main__": 8, "__init__": 0,
}

# library -> the package folders/modules allowed to import it
OWNERS = {
    "fitparse": {"sources"},
    "gpxpy": {"sources"},
    "defusedxml": {"sources"},
    "timezonefinder": {"sources"},
    "duckdb": {"warehouse"},
    "altair": {"report"},
    "vl_convert": {"report"},
    "click": {"cli"},
}


def _stage(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


MODULES = sorted(PKG.rglob("*.py"))


def test_modules_found() -> None:
    assert len(MODULES) > 10


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_left(path: Path) -> None:
    stage = _stage(path)
    rank = RANK[stage]
    for name in _imports(path):
        top = name.split(".")[0]
        if top == "pipeline":
            parts = name.split(".")
            if len(parts) == 1:
                continue
            target = parts[1]
            assert RANK[target] <= rank or target == stage, f"{path.name} ({stage}) imports {name}"
        elif top in OWNERS:
            assert stage in OWNERS[top], f"{path.relative_to(PKG)} imports {top}; only {OWNERS[top]} may"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_modules_stay_small(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= 900, f"{path.name} has {lines} lines; split it"
