"""Scenarios over the real broker: the crush is detected live, and the demo runs headless."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from agents.devtools.simulator import SCENARIOS, publish_live, simulate
from agents.topics import create_topics, topic_specs
from schemas import load_zones

from .conftest import (
    REPO,
    free_port,
    make_settings,
    payloads,
    poll_until,
    settings_env,
    start_worker,
    stop_worker,
)

ZONES = load_zones(REPO / "deploy/zones/phitsanulok.yaml")


# The production windows: the simulator's gateways batch 3 s of readings and deliver them with
# up to 3 s of jitter, and one sensor's clock runs 8 s fast; a 10 s grace absorbs that.
PRODUCTION = {"SAFETOUR_WINDOW_S": "60", "SAFETOUR_SLIDE_S": "5", "SAFETOUR_GRACE_S": "10",
              "SAFETOUR_IDLE_S": "30"}


def test_crush_is_detected_live_over_kafka(kafka: str, tmp_path: Path) -> None:
    from tests.unit.test_simulate import assert_detection  # noqa: PLC0415

    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    out = simulate(SCENARIOS["crush"], ZONES, seed=1)
    # The sensors alone: published flat out, the readings are a backlog the worker reads for
    # a while, and reports (which act when they arrive) would be read ahead of it; the crush
    # report would then raise critical at its own time, before the windows get there.
    out = replace(out, reports=[])
    proc = start_worker(s, tmp_path / "worker.log", **PRODUCTION)
    try:
        asyncio.run(publish_live(out, kafka, s.topics.sensor_events, s.topics.reports,
                                 speed=0))

        def bridge_critical() -> Any:
            alerts = payloads(kafka, s.topics.alerts)
            return alerts if any(a["zone_id"] == "naresuan-bridge" and a["level"] == "critical"
                                 for a in alerts) else None

        alerts = poll_until(bridge_critical, timeout=60, what="the bridge to go critical")
    finally:
        stop_worker(proc)
    assert_detection(out.truth, alerts)


def test_demo_runs_headless_and_shows_the_crush(kafka: str, tmp_path: Path) -> None:
    s = make_settings(kafka, tmp_path)
    env = settings_env(s) | {"SAFETOUR_IDLE_S": "1"}
    env.pop("PYTHONWARNINGS", None)
    res = subprocess.run([sys.executable, "-m", "agents", "run", "--scenario", "crush",
                          "--speed", "100", "--expect-alerts", "--dashboard-port",
                          str(free_port())], env=env, capture_output=True,
                         text=True, timeout=240, stdin=subprocess.DEVNULL, check=False)
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-3000:]
    assert "CRITICAL" in out
    assert "naresuan-bridge" in out
    assert "สะพานนเรศวร" in out  # Thai first, for the operations centre
    assert "operations-centre dashboard: http://127.0.0.1:" in res.stderr + out
    assert os.environ.get("SAFETOUR_TOPIC_PREFIX") is None  # the demo ran on its own topics
