"""`safetour run` stopped by SIGTERM (systemd, `timeout`, a CI runner) or SIGINT stops the
worker and the embedded broker it started, by their pids, and exits, within 30 s.

The run starts a broker of its own (its own state dir and port, SAFETOUR_KAFKA_BOOTSTRAP
unset), from the jars the session already has (symlinked: no download)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.config import Settings
from agents.devtools.broker import _pid_alive
from tests.chaos import free_port_pair

from .conftest import REPO, free_port, poll_until, signal_and_wait

STOP_WITHIN_S = 30.0




def jars() -> Path:
    """The Kafka jars of this checkout (or of the configured state dir)."""
    libs = Settings.from_env().state_dir / "kafka" / "libs"
    assert (libs / ".complete-4.1.1").exists(), f"no Kafka jars in {libs}: run scripts/bootstrap"
    return libs


@pytest.fixture
def run_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    state = tmp_path / "state"
    (state / "kafka").mkdir(parents=True)
    (state / "kafka" / "libs").symlink_to(jars(), target_is_directory=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("SAFETOUR_KAFKA_BOOTSTRAP", "SAFETOUR_TOPIC_PREFIX", "SAFETOUR_APP_ID")}
    env |= {"SAFETOUR_STATE_DIR": str(state), "SAFETOUR_BROKER_PORT": str(free_port_pair()),
            "SAFETOUR_WEB_PORT": str(free_port())}
    yield env, state
    # Whatever happened, leave no broker behind.
    pid_file = state / "kafka" / "broker.pid"
    with contextlib.suppress(OSError, ValueError, ProcessLookupError):
        os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)


def _reap(proc: subprocess.Popen[bytes], worker_pid: int | None) -> None:
    """Whatever a test saw: the process under test and the worker it started are gone."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if worker_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker_pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_stops_the_worker_and_the_broker(
    sig: signal.Signals, run_env: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, state = run_env
    out = tmp_path / "run.out"
    with out.open("wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agents", "run", "--scenario", "crush", "--speed", "20",
             "--dashboard-port", str(free_port())],
            cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    worker_pid: int | None = None
    try:
        text = poll_until(lambda: (t := out.read_text(errors="replace"))
                          and "worker ready" in t and t, timeout=180, what="worker ready",
                          proc=proc, log=out)
        m = re.search(r"worker starting \(pid (\d+)", text)
        assert m, text
        worker_pid = int(m.group(1))
        broker_pid = int((state / "kafka" / "broker.pid").read_text().strip())
        assert _pid_alive(worker_pid)
        assert _pid_alive(broker_pid)

        rc, took = signal_and_wait(proc, sig, STOP_WITHIN_S, "`safetour run`", out)
        log = out.read_text(errors="replace")
        assert rc == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert not _pid_alive(worker_pid), f"worker {worker_pid} still running\n{log[-3000:]}"
        assert not _pid_alive(broker_pid), f"broker {broker_pid} still running\n{log[-3000:]}"
        assert not (state / "kafka" / "broker.pid").exists()
        assert took < STOP_WITHIN_S
    finally:
        _reap(proc, worker_pid)


SIMULATE_STOP_WITHIN_S = 10.0  # issue 13 item 9: flushes what it sent, then exits 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_simulate_stops_cleanly_mid_publish(
    sig: signal.Signals, kafka: str, tmp_path: Path
) -> None:
    """`safetour simulate` publishing live (speed 1: minutes of scenario left) stops on
    SIGTERM or SIGINT within SIMULATE_STOP_WITHIN_S, exit code 0, no traceback, and what it
    reported as sent is on the topic (flushed)."""
    import asyncio  # noqa: PLC0415

    from agents.topics import create_topics, topic_specs  # noqa: PLC0415

    from .conftest import kcat_count, make_settings, settings_env  # noqa: PLC0415

    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    out = tmp_path / "simulate.out"
    with out.open("wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agents", "simulate", "--scenario", "crush", "--speed", "1",
             "--quiet"], cwd=REPO, env=settings_env(s), stdout=f, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    try:
        poll_until(lambda: kcat_count(kafka, s.topics.sensor_events) > 0, timeout=60,
                   what="simulate publishing", proc=proc, log=out)
        rc, took = signal_and_wait(proc, sig, SIMULATE_STOP_WITHIN_S, "`safetour simulate`",
                                   out)
        log = out.read_text(errors="replace")
        assert rc == 0, f"exit {rc} after {sig.name}\n{log[-3000:]}"
        assert "Traceback" not in log, log[-3000:]
        assert took < SIMULATE_STOP_WITHIN_S
        m = re.search(r"published ([\d,]+) messages", log)
        assert m, f"no count of what was published\n{log[-3000:]}"
        sent = int(m.group(1).replace(",", ""))
        on_topics = kcat_count(kafka, s.topics.sensor_events) + kcat_count(
            kafka, s.topics.reports)
        assert on_topics == sent, f"said {sent} published, the topics hold {on_topics}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _children(pid: int, name: str) -> list[int]:
    """Child processes of ``pid`` whose command line holds ``name`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if ppid == pid and name in cmd:
                out.append(int(stat.parent.name))
    return out


def test_the_benchmark_stops_its_worker_and_its_broker_on_sigterm(
    run_env: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    """`python -m benchmarks` stopped mid-run (a worker of its own running) stops that worker
    and the embedded broker it started, by their pids, and exits 130 without a traceback.
    Before, SIGTERM ended the harness at once and left both running."""
    env, state = run_env
    out = tmp_path / "bench.out"
    with out.open("wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks", "--smoke", "--systems", "safetour",
             "--skip-extras", "--out", str(tmp_path / "RESULTS.md")],
            cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    worker_pid: int | None = None
    try:
        (worker_pid,) = poll_until(lambda: _children(proc.pid, "agents worker"), timeout=180,
                                   what="the benchmark's worker", proc=proc, log=out)
        broker_pid = int((state / "kafka" / "broker.pid").read_text().strip())
        assert _pid_alive(broker_pid)

        rc, _ = signal_and_wait(proc, signal.SIGTERM, STOP_WITHIN_S + 30, "the benchmark",
                             out)
        log = out.read_text(errors="replace")
        assert rc == 130, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert "interrupted" in log, log[-3000:]
        assert not _pid_alive(worker_pid), f"worker {worker_pid} still running\n{log[-3000:]}"
        assert not _pid_alive(broker_pid), f"broker {broker_pid} still running\n{log[-3000:]}"
        assert not (tmp_path / "RESULTS.md").exists()  # no results from an interrupted run
    finally:
        _reap(proc, worker_pid)
