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


# agents/ is split by job. A subpackage may import the shared modules at agents/ top level and
# the subpackages listed here, through their __init__ (their __all__), never their modules.
# Today no subpackage needs another: delivery, dashboard and devtools never import the worker,
# and the worker never imports delivery or the dashboard.
SUBPACKAGES = ("worker", "delivery", "dashboard", "devtools")
MAY_IMPORT: dict[str, set[str]] = {sub: set() for sub in SUBPACKAGES}
# The shared top-level modules import no subpackage; only the CLI (cli.py, its `safetour run`
# in run.py, and __main__) sits above them.
ENTRY_POINTS = {"cli.py", "run.py", "__main__.py"}


def agents_imports(path: Path, package: str | None = None) -> set[str]:
    """Every agents.* module ``path`` (a module of ``package``, by default where it lies)
    imports, relative imports resolved, ``from p import m`` counted as ``p.m`` where ``m`` is a
    module of ``p``."""
    if package is None:
        package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for a in node.names:
                sub = f"{base}.{a.name}"
                is_module = (REPO / sub.replace(".", "/")).is_dir() or (
                    REPO / (sub.replace(".", "/") + ".py")).is_file()
                out.add(sub if is_module else base)
    return {m for m in out if m == "agents" or m.startswith("agents.")}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else None


def test_agents_subpackages_import_in_allowed_directions_only() -> None:
    bad = []
    for f in sorted((REPO / "agents").rglob("*.py")):
        here = layer_of(".".join(f.relative_to(REPO).with_suffix("").parts))
        for m in sorted(agents_imports(f)):
            there = layer_of(m)
            if there is None or there == here:
                continue
            if here is None and f.name not in ENTRY_POINTS:
                bad.append(f"{f.name}: shared module imports {m}")
            elif here is not None and there not in MAY_IMPORT[here]:
                bad.append(f"{f.name}: {here} imports {m}")
            elif m != f"agents.{there}":
                bad.append(f"{f.name}: {m} is private to agents.{there} (import its __all__)")
    assert bad == []


def test_the_layering_check_sees_a_violation(tmp_path: Path) -> None:
    """The check above can fail: reaches into another subpackage's modules are found."""
    assert "agents.heartbeat" in agents_imports(REPO / "agents" / "dashboard" / "follower.py")
    probe = tmp_path / "probe.py"
    probe.write_text("from ..worker import state\nfrom agents.worker.app import build_app\n"
                     "from .. import devtools\n")
    assert agents_imports(probe, "agents.dashboard") == {
        "agents.worker.state", "agents.worker.app", "agents.devtools"}
    assert {layer_of(m) for m in agents_imports(probe, "agents.dashboard")} == {
        "worker", "devtools"}
