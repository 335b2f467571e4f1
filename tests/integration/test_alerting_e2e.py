"""Alerting end to end through the real broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from agents.config import Settings

from .conftest import kcat_produce, kcat_read, payloads, poll_until
from .test_recovery import publish

# (seconds, density p/m²): calm, elevated, high, critical, back to high, calm.
SCRIPT = [(20, 1.0), (40, 2.6), (40, 4.0), (60, 6.0), (60, 4.0), (90, 1.0)]


def test_scripted_surge_gives_each_lifecycle_step_exactly_once(stack: Settings) -> None:
    t0 = (int(time.time()) - 2 * 3600) * 1000  # recorded two hours ago, replayed at speed
    msgs, t = [], 0
    for seconds, density in SCRIPT:
        for _ in range(seconds):
            ev = {"event_id": f"surge-{t}", "sensor_id": "wy-vihara-cam-1",
                  "zone_id": "wat-yai-vihara", "kind": "occupancy", "ts": t0 + t * 1000,
                  "count": round(density * 300)}
            msgs.append((b"wat-yai-vihara", orjson.dumps(ev)))
            t += 1
    asyncio.run(publish(stack.bootstrap, stack.topics.sensor_events, msgs))

    def episode() -> Any:
        alerts = [a for a in payloads(stack.bootstrap, stack.topics.alerts)
                  if a["zone_id"] == "wat-yai-vihara"]
        return alerts if any(a["status"] == "resolved" for a in alerts) else None

    alerts = poll_until(episode, timeout=60, what="the episode to resolve")
    assert [(a["status"], a["level"]) for a in alerts] == [
        ("raised", "elevated"), ("escalated", "high"), ("escalated", "critical"),
        ("deescalated", "high"), ("resolved", "normal"),
    ]
    assert len({a["alert_id"] for a in alerts}) == 1
    assert all(a["reason"] == "density" for a in alerts)
    assert alerts[2]["evidence"]["sensors"][0]["sensor_id"] == "wy-vihara-cam-1"


def test_crush_report_raises_critical_within_two_seconds(stack: Settings, tmp_path: Path) -> None:
    report = {"report_id": "r-crush-1", "ts": int(time.time() * 1000), "lat": 16.82338,
              "lon": 100.2610, "category": "crush", "severity": 5, "source": "staff",
              "lang": "th", "text": "<b>คนเบียดกันบนสะพาน</b> ช่วยด้วย"}
    sent_ms = int(time.time() * 1000)
    kcat_produce(stack.bootstrap, stack.topics.reports, [orjson.dumps(report)], "r", tmp_path)

    def alert() -> Any:
        for m in kcat_read(stack.bootstrap, stack.topics.alerts):
            a = orjson.loads(m["payload"])
            if a["reason"] == "report":
                return m, a
        return None

    msg, a = poll_until(alert, timeout=10, what="the report alert", every=0.1)
    assert (a["zone_id"], a["level"], a["status"]) == ("naresuan-bridge", "critical", "raised")
    # Broker append time of the alert, minus the time just before the report was sent.
    assert msg["ts"] - sent_ms <= 2000
    (ev,) = a["evidence"]["reports"]
    assert ev["text"] == report["text"]  # kept verbatim as plain text, never interpreted
    assert "ฝูงชนเบียดอัด" in a["message"]["th"]
