"""Child processes of the ``safetour`` command: the worker it starts (``safetour run``, a
drill, the benchmarks), how it is stopped (SIGTERM, then SIGKILL after a bound) and the stop
signals of the command itself (README "The `safetour` command")."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from schemas import SafetourError

from .config import Settings

__all__ = ["BROKER_STOP_S", "STOP_SIGNALS", "WORKER_STOP_S", "echo", "ignore_stop_signals",
           "interrupt_on_sigterm", "start_worker_process", "stop_process", "wait_for_line",
           "worker_credentials"]


def echo(msg: str) -> None:
    """One line of the command's progress on stdout."""
    print(f"safetour: {msg}", flush=True)


def wait_for_line(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SafetourError(f"the worker exited with code {proc.returncode}; see {path}")
        with contextlib.suppress(OSError):
            if needle in path.read_text(errors="replace"):
                return
        time.sleep(0.2)
    raise SafetourError(f"the worker was not ready within {timeout:.0f}s; see {path}")


def worker_credentials(user: str, password_file: str) -> dict[str, str]:
    """The environment of a worker that connects as SASL ``user`` (the password read from
    ``password_file``), whoever runs the command that starts it (README "Drills")."""
    return {"SAFETOUR_KAFKA_USER": user, "SAFETOUR_KAFKA_PASSWORD_FILE": password_file}


def start_worker_process(settings: Settings, log_path: Path,
                         extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SAFETOUR_KAFKA_BOOTSTRAP=settings.bootstrap_servers,
               SAFETOUR_TOPIC_PREFIX=settings.topics.prefix, SAFETOUR_APP_ID=settings.app_id,
               SAFETOUR_STATE_DIR=str(settings.state_dir),
               SAFETOUR_WEB_PORT=str(settings.web_port))
    if settings.exercise:  # a drill's worker (`safetour run --drill`)
        env |= {"SAFETOUR_EXERCISE": "1",
                "SAFETOUR_ALERTS_TOPIC_PREFIX": settings.topics.outputs or ""}
    if extra_env and "SAFETOUR_KAFKA_PASSWORD_FILE" in extra_env:
        env.pop("SAFETOUR_KAFKA_PASSWORD", None)  # the caller's password is not the worker's
    env |= extra_env or {}
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agents", "worker"], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env,
        )


# `safetour run` stopping (SIGTERM, SIGINT): the worker has this long to leave its group and
# exit before it is killed, then the broker this long (README "The `safetour` command").
WORKER_STOP_S = 10.0
BROKER_STOP_S = 15.0


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interrupt_on_sigterm() -> None:
    """SIGTERM (systemd, `timeout`, a CI runner) stops like Ctrl-C: as SIGINT, so that
    asyncio.run cancels its main task and the clean-up of cmd_run runs."""
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))


def ignore_stop_signals() -> None:
    """While it stops what it started, a second signal must not leave them running (each
    stop is bounded and ends in SIGKILL)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
