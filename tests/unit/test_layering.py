"""Imports run one way: agents -> streams -> schemas. The core never imports Kafka clients."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "schemas": {"streams", "agents", "faust", "aiokafka", "mode"},
    "streams": {"agents", "faust", "aiokafka", "mode"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    bad = {f.name: imported_roots(f) & FORBIDDEN[package] for f in files}
    assert {k: v for k, v in bad.items() if v} == {}
