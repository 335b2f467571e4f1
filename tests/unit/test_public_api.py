"""The public surface of each package is exactly its ``__all__`` (ruff RUF022 keeps it sorted)."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = ["schemas", "streams", "agents", "agents.worker", "agents.delivery",
            "agents.dashboard", "agents.devtools"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_complete(name: str) -> None:
    mod = importlib.import_module(name)
    exported = list(mod.__all__)
    assert len(exported) == len(set(exported))
    public = {n for n in vars(mod) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(mod, n)).__name__ == "module"}
    assert public - modules - {"annotations", "files", "Traversable"} == set(exported)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_importable_and_public(name: str) -> None:
    mod = importlib.import_module(name)
    for n in mod.__all__:
        assert not n.startswith("_"), n
        obj = getattr(mod, n)  # AttributeError: listed, not there
        if inspect.isclass(obj) or inspect.isfunction(obj):
            # Defined in the package itself, not re-exported from another one.
            assert obj.__module__ == name or obj.__module__.startswith(name + "."), n


def test_the_simulator_function_does_not_shadow_a_module() -> None:
    """``agents.devtools.simulate`` is the function; the module is ``simulator``."""
    import agents.devtools  # noqa: PLC0415

    assert callable(agents.devtools.simulate)
    assert type(agents.devtools.simulator).__name__ == "module"
