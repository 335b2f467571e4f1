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
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.config import Settings, Topics
from agents.devtools.broker import EmbeddedBroker
from agents.topics import create_topics, topic_specs

REPO = Path(__file__).resolve().parents[2]


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
