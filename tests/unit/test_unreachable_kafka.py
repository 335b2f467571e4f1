"""A tool that cannot reach Kafka says so in one line, naming the address, and exits 2
within the connect timeout: no traceback, no hang (no broker needed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = [["topics", "list"], ["topics", "create"], ["alerts", "tail"], ["zones", "publish"]]
BOUND_S = 3.0  # SAFETOUR_KAFKA_CONNECT_TIMEOUT_S of these runs
STARTUP_S = 10.0  # the interpreter and its imports, on a slow CI machine


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there once the socket is closed


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def run_tool(args: list[str], port: int) -> tuple[int, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFETOUR_")}
    env |= {"SAFETOUR_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
            "SAFETOUR_KAFKA_CONNECT_TIMEOUT_S": str(BOUND_S)}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "agents", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=BOUND_S + STARTUP_S + 30,
                          check=False)
    return proc.returncode, proc.stderr, time.monotonic() - t0


def assert_one_line(rc: int, stderr: str, elapsed: float, port: int, why: str) -> None:
    assert rc == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"safetour: error: cannot reach Kafka at 127.0.0.1:{port}: ")
    assert why in lines[0]
    assert elapsed < BOUND_S + STARTUP_S


@pytest.mark.parametrize("tool", TOOLS, ids=" ".join)
def test_a_closed_port(tool: list[str]) -> None:
    port = closed_port()
    rc, err, elapsed = run_tool(tool, port)
    assert_one_line(rc, err, elapsed, port, "no broker answered")


@pytest.mark.parametrize("tool", TOOLS, ids=" ".join)
def test_a_port_that_never_answers(tool: list[str], silent_port: int) -> None:
    rc, err, elapsed = run_tool(tool, silent_port)
    assert_one_line(rc, err, elapsed, silent_port, f"no answer within {BOUND_S:g}s")
    assert elapsed >= BOUND_S  # it did wait for the bound, and no longer
