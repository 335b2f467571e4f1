"""``safetour run``: the demo (embedded Kafka, topics, a worker, a Phitsanulok scenario
played live, its alerts shown as they arrive) and drills (``--drill``: the same on a real
cluster, every alert marked as an exercise; README "Drills")."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from schemas import SafetourError

from .config import Settings, Topics
from .devtools import EmbeddedBroker
from .processes import (
    BROKER_STOP_S,
    STOP_SIGNALS,
    WORKER_STOP_S,
    ignore_stop_signals,
    interrupt_on_sigterm,
    start_worker_process,
    stop_process,
    wait_for_line,
    worker_credentials,
)
from .processes import echo as _echo
from .topics import create_topics, topic_specs

__all__ = ["cmd_run", "dashboard_operators", "drill_settings", "start_run_worker"]


def dashboard_operators(*, demo: bool) -> tuple[dict[str, str], str | None]:
    """Operators from the environment; for the demo, a one-off operator 'demo' if none."""
    from .dashboard import new_token, parse_operators  # noqa: PLC0415

    configured = "SAFETOUR_DASHBOARD_TOKENS" in os.environ or \
        "SAFETOUR_DASHBOARD_TOKENS_FILE" in os.environ
    if configured or not demo:
        return parse_operators(os.environ), None
    token = new_token()
    return {token: "demo"}, token


def drill_settings(settings: Settings, run_id: str) -> Settings:
    """A drill: input, state, density and DLQ topics and a consumer group of its own (its
    readings never mix with real ones, so a real alert is never hidden or marked), alerts
    and CAP on the real topics, every alert marked ``exercise`` (README "Drills")."""
    real = settings.topics.prefix
    return replace(settings, topics=Topics(f"{real}drill-{run_id}.", outputs=real),
                   app_id=f"{settings.app_id}-drill-{run_id}", exercise=True)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from . import devtools as sim  # noqa: PLC0415

    if args.scenario not in sim.SCENARIOS:
        raise SafetourError(f"unknown scenario {args.scenario!r}; choose from "
                            f"{', '.join(sim.SCENARIOS)}")
    scenario = sim.SCENARIOS[args.scenario]
    # Each demo run gets topics and a consumer group of its own: a run must not restore the
    # state (watermarks, open episodes) that an earlier run left in the broker.
    if args.drill:
        settings = drill_settings(settings, time.strftime("%Y%m%d-%H%M%S"))
        _echo(f"DRILL: readings on {settings.topics.prefix}*, alerts marked as an exercise "
              f"on {settings.topics.alerts}")
    elif "SAFETOUR_TOPIC_PREFIX" not in os.environ:
        run_id = time.strftime("%Y%m%d-%H%M%S")
        settings = replace(settings, topics=Topics(f"demo-{run_id}.safetour."),
                           app_id=f"safetour-demo-{run_id}")
    zones = settings.load_registry()
    simulated = sim.simulate(scenario, zones, seed=args.seed, grace_s=settings.grace_s)
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        return _run(args, settings, scenario, simulated)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _tail_stopped(task: asyncio.Task[int]) -> None:
    """The demo's live view of the alerts ended by itself: one line, no traceback (the
    worker and the scenario go on)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        _echo(f"the live alert view stopped: {exc}; the worker goes on "
              "(`safetour alerts tail` shows its alerts)")


def start_run_worker(settings: Settings, log_path: Path, *,
                     worker_env: Mapping[str, str] | None = None,
                     wait_s: float | None = None) -> subprocess.Popen[bytes]:
    """`safetour run`'s (and a drill's) topics, then its worker process, once ready (stopped
    again if it is not)."""
    asyncio.run(create_topics(settings.kafka, topic_specs(settings.topics), wait_s=wait_s))
    _echo(f"topics ready: {settings.topics.prefix}* (another terminal: "
          f"SAFETOUR_TOPIC_PREFIX={settings.topics.prefix} safetour alerts tail)")
    worker = start_worker_process(settings, log_path, worker_env)
    _echo(f"worker starting (pid {worker.pid}, log {log_path})...")
    try:
        wait_for_line(log_path, "Ready", worker, timeout=120)
    except BaseException:
        stop_process(worker, timeout=WORKER_STOP_S)
        raise
    return worker


def _run_worker_env(args: argparse.Namespace, settings: Settings) -> dict[str, str]:
    """The worker's own SASL user (--worker-password-file), if it is not the caller's. On a
    SASL cluster a drill is run by the operator and its worker by the worker principal: the
    operator may not write alerts (deploy/kafka/acls.json)."""
    if args.worker_password_file:
        return worker_credentials(args.worker_user, args.worker_password_file)
    if args.drill and settings.kafka.sasl:
        raise SafetourError("a drill on a SASL cluster runs its worker as the worker "
                            "principal: give --worker-password-file (and --worker-user if it "
                            "is not 'worker')")
    return {}


def _run(args: argparse.Namespace, settings: Settings, scenario: Any, simulated: Any) -> int:
    from . import devtools as sim  # noqa: PLC0415
    from .tail import tail_alerts  # noqa: PLC0415

    interrupt_on_sigterm()
    broker = EmbeddedBroker(settings, echo=_echo, say=print)
    started = False
    worker: subprocess.Popen[bytes] | None = None
    seen = 0
    since_ms = int(time.time() * 1000) - 60_000  # a drill's start (clock skew: a minute)
    try:
        if settings.embedded:
            started = broker.start()
        else:
            _echo(f"using Kafka at {settings.bootstrap} (SAFETOUR_KAFKA_BOOTSTRAP)")
        worker = start_run_worker(settings, settings.state_dir / "logs" / "worker.log",
                                  worker_env=_run_worker_env(args, settings),
                                  wait_s=60.0 if started else None)
        web = f"http://{settings.web_host}:{settings.web_port}"
        _echo(f"worker ready; {web}/readyz and {web}/metrics")
        minutes = scenario.duration_s / 60
        _echo(f"scenario {scenario.name!r}: {scenario.title}, {minutes:.0f} minutes from "
              f"{scenario.start:%Y-%m-%d %H:%M} ICT, played {args.speed:g}x "
              f"({scenario.duration_s / args.speed:.0f} s). Ctrl-C stops.")

        async def demo() -> int:
            stop = asyncio.Event()
            board_stop = asyncio.Event()
            tail = asyncio.create_task(tail_alerts(
                settings.kafka, settings.topics.alerts, stop=stop,
            ))
            tail.add_done_callback(_tail_stopped)
            board: asyncio.Task[None] | None = None
            if args.dashboard_port:
                from .dashboard import serve_dashboard  # noqa: PLC0415

                operators, token = dashboard_operators(demo=True)

                def ready(url: str, link: str | None) -> None:
                    _echo(f"operations-centre dashboard: {link} (works once)" if link else
                          f"operations-centre dashboard: {url}  (sign in with your token)")

                board = asyncio.create_task(serve_dashboard(
                    settings, operators, settings.web_host, args.dashboard_port,
                    stop=board_stop, ready=ready, login_link_for="demo" if token else None))
            try:
                await sim.publish_live(
                    simulated, settings.kafka, settings.topics.sensor_events,
                    settings.topics.reports, speed=args.speed)
                # Let the last windows close (the partitions go quiet) and their alerts arrive.
                await asyncio.sleep(settings.idle_s + settings.grace_s + settings.slide_s + 3)
                if board is not None and sys.stdin.isatty() and not args.expect_alerts:
                    _echo("scenario over; the dashboard stays up until Ctrl-C")
                    await board
            finally:
                stop.set()
                board_stop.set()
                if board is not None:
                    await board
                # The view ends within a poll once stopped; an interrupt must not leave it
                # to fail during the loop's shutdown (a traceback instead of one line).
                await asyncio.wait([tail], timeout=2)
                tail.cancel()
            with contextlib.suppress(SafetourError, asyncio.CancelledError):  # _tail_stopped
                return await tail
            return 0

        seen = asyncio.run(demo())
        _echo(f"demo finished: {seen} alert messages")
    except KeyboardInterrupt:
        _echo("interrupted; shutting down")
    finally:
        ignore_stop_signals()
        if worker is not None:
            _echo(f"stopping the worker (pid {worker.pid})...")
            stop_process(worker, timeout=WORKER_STOP_S)
            if settings.exercise:  # resolve what it left open (agents/drill.py)
                from .drill import finish_drill  # noqa: PLC0415

                finish_drill(settings, since_ms, _echo)
        if (started or broker.started_here) and not args.keep_broker:
            broker.stop(timeout=BROKER_STOP_S)
    return 0 if seen or not args.expect_alerts else 1
