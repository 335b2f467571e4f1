"""The public surface of each package is exactly its ``__all__`` (ruff RUF022 keeps it sorted)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("name", ["schemas", "streams"])
def test_all_is_complete(name: str) -> None:
    mod = importlib.import_module(name)
    exported = list(mod.__all__)
    assert len(exported) == len(set(exported))
    public = {n for n in vars(mod) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(mod, n)).__name__ == "module"}
    assert public - modules - {"annotations", "files", "Traversable"} == set(exported)
