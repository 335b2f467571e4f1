"""Broker tests: a real Apache Kafka, started once per session.

The embedded broker is started if ``SAFETOUR_KAFKA_BOOTSTRAP`` does not name a cluster. If it
cannot start, every broker test ERRORS: these tests never skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from agents.config import Settings, Topics
from agents.devtools.broker import EmbeddedBroker
from agents.topics import create_topics, topic_specs

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """Bootstrap address of a running Apache Kafka (embedded unless one is configured)."""
    settings = Settings.from_env()
    if not settings.embedded:
        yield settings.bootstrap
        return
    broker = EmbeddedBroker(settings)
    started = broker.start()  # raises BrokerError with the log tail: an error, never a skip
    yield broker.bootstrap
    if started:
        broker.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_settings(kafka: str, tmp: Path) -> Settings:
    """Settings with topics and a consumer group of their own, so tests never collide."""
    tag = uuid.uuid4().hex[:10]
    return replace(
        Settings.from_env({}), bootstrap=kafka, topics=Topics(f"t{tag}.safetour."),
        app_id=f"safetour-test-{tag}", state_dir=tmp, web_port=free_port(),
    )


def settings_env(s: Settings) -> dict[str, str]:
    return dict(
        os.environ,
        SAFETOUR_KAFKA_BOOTSTRAP=s.bootstrap_servers,
        SAFETOUR_TOPIC_PREFIX=s.topics.prefix,
        SAFETOUR_APP_ID=s.app_id,
        SAFETOUR_STATE_DIR=str(s.state_dir),
        SAFETOUR_WEB_PORT=str(s.web_port),
        # Short windows so tests see outputs within seconds (defaults: 60/5/10/30 s).
        SAFETOUR_WINDOW_S="10", SAFETOUR_SLIDE_S="1", SAFETOUR_GRACE_S="1",
        SAFETOUR_IDLE_S="2", SAFETOUR_SESSION_TIMEOUT_S="6",
        # Tests publish recorded input before the worker starts: read it all (a backtest).
        # tests/integration/test_start.py covers the default, recent.
        SAFETOUR_START="from-start",
    )


def start_worker(
    s: Settings, log_path: Path, **env: str
) -> subprocess.Popen[bytes]:
    """Start `safetour worker` on these settings and wait until faust says it is ready."""
    with log_path.open("ab") as out:
        mark = out.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "agents", "worker"], env=settings_env(s) | env,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    poll_until(lambda: "[^Worker]: Ready" in log_path.read_text(errors="replace")[mark:],
               timeout=90, what="worker ready", proc=proc, log=log_path)
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def stack(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Fresh topics and a running `safetour worker` process on them."""
    s = make_settings(kafka, tmp_path_factory.mktemp("state"))
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    proc = start_worker(s, s.state_dir / "worker.log")
    try:
        yield s
    finally:
        stop_worker(proc)


def poll_until(
    check: Callable[[], Any], *, timeout: float, what: str,
    proc: subprocess.Popen[bytes] | None = None, log: Path | None = None, every: float = 0.2,
) -> Any:
    """Return ``check()`` once truthy; fail with context at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited ({proc.returncode}) while waiting for {what}\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tail}")
        time.sleep(every)


def connections_to(port: int) -> int:
    """How many TCP sockets this process holds that are connected to ``port`` (Linux /proc)."""
    mine: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as fh:
            rows = fh.readlines()[1:]
        for row in rows:
            cols = row.split()
            if int(cols[2].rsplit(":", 1)[1], 16) == port and cols[9] in mine:
                n += 1
    return n


def run_then_drain(main: Coroutine[Any, Any, T], port: int, *, within: float = 15) -> T:
    """``asyncio.run(main)``, then keep the loop running until this process holds no
    connection to ``port`` (at most ``within`` seconds).

    A TLS connection that aiokafka closed without waiting (its bootstrap connection) is
    only closed once the close_notify exchange with the broker ends. If the loop ends first,
    the socket outlives it and is reported as an unclosed transport whenever the garbage
    collector finds it, in whatever test runs then (CPython gh-90476; seen once in CI on a
    loaded machine). A socket still open at the deadline is a real leak: it is reported."""

    async def run() -> T:
        try:
            return await main
        finally:
            deadline = time.monotonic() + within
            # No event tells when the kernel closed a socket: poll /proc until the deadline.
            while connections_to(port) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    return asyncio.run(run())


def signal_and_wait(
    proc: subprocess.Popen[bytes], sig: int, within: float, what: str,
    log: Path | None = None,
) -> tuple[int, float]:
    """Send ``sig`` to ``proc`` and wait up to ``within`` s for it to exit; return its exit
    code and the seconds it took. Still running then: it is killed and the test fails, with
    the tail of ``log``."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        rc = proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
        pytest.fail(f"{what} still running {within:.0f}s after "
                    f"{signal.Signals(sig).name}\n{tail}")
    return rc, time.monotonic() - t0


KCAT = shutil.which("kcat") or "kcat"


def kcat_produce(kafka: str, topic: str, values: list[bytes], key: str, tmp: Path) -> None:
    """Publish each value as one message with Debian's kcat (an independent Kafka client)."""
    files = []
    for i, v in enumerate(values):
        f = tmp / f"msg-{uuid.uuid4().hex}-{i}"
        f.write_bytes(v)
        files.append(str(f))
    subprocess.run([KCAT, "-b", kafka, "-P", "-t", topic, "-k", key, *files], check=True,
                   timeout=60)


def kcat_read(kafka: str, topic: str) -> list[dict[str, Any]]:
    """Every message of ``topic`` so far, via kcat's JSON envelope."""
    out = subprocess.run(
        [KCAT, "-b", kafka, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-J"],
        check=True, capture_output=True, timeout=60,
    ).stdout
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def payloads(kafka: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(m["payload"]) for m in kcat_read(kafka, topic) if m.get("payload")]


def kcat_count(kafka: str, topic: str) -> int:
    """How many messages ``topic`` holds so far (values never decoded: they may be binary)."""
    out = subprocess.run(
        [KCAT, "-b", kafka, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o\\n"],
        check=True, capture_output=True, timeout=60,
    ).stdout
    return len(out.splitlines())


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The chaos tests' one-line summaries (tests/integration/test_chaos.py) and measured
    times that are reported rather than asserted ("timing"), recorded as user properties so
    they reach this report from pytest-xdist workers too."""
    for section in ("chaos", "timing"):
        lines = [str(v) for reports in terminalreporter.stats.values() for r in reports
                 if getattr(r, "when", None) == "call"
                 for k, v in getattr(r, "user_properties", ()) if k == section]
        if lines:
            terminalreporter.section(section)
            for line in lines:
                terminalreporter.write_line(line)
