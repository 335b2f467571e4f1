"""Guards shared by every test: no leaked environment variables, asyncio tasks or threads."""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio


@pytest.fixture(autouse=True)
def no_env_leaks() -> Iterator[None]:
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    # pytest's own bookkeeping variable is not a leak.
    for d in (before, after):
        d.pop("PYTEST_CURRENT_TEST", None)
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        os.environ.clear()
        os.environ.update(before)
        pytest.fail(f"test leaked environment changes: {changed}")


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [
        t for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.daemon
    ]
    if leaked:
        pytest.fail(f"test leaked threads: {leaked}")


@pytest_asyncio.fixture
async def _task_guard() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    # The finaliser runs in a task of its own; everything else still pending leaked.
    me = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]
    for t in leaked:
        t.cancel()
    if leaked:
        pytest.fail(f"test leaked asyncio tasks: {leaked}")


@pytest.fixture(autouse=True)
def no_task_leaks(request: pytest.FixtureRequest) -> None:
    """Async tests must not leave tasks running when they finish."""
    if inspect.iscoroutinefunction(getattr(request.node, "obj", None)):
        request.getfixturevalue("_task_guard")
