"""A drill end to end (`safetour run --drill`): its worker, started the way `run --drill`
starts it, reads hand-made readings on the drill's own topics and alerts on the real alerts
and CAP topics, marked as an exercise; a real worker on the same cluster alerts at the same
time, unmarked."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import orjson
import pytest

from agents.processes import stop_process
from agents.run import drill_settings, start_run_worker
from agents.topics import create_topics, topic_specs
from streams.cap import CAP_NS

from .conftest import (
    free_port,
    kcat_produce,
    kcat_read,
    make_settings,
    payloads,
    poll_until,
    settings_env,
    start_worker,
    stop_worker,
)
from .test_recovery import publish

DRILL_ZONE = "wat-yai-vihara"


def drill_readings(t0_ms: int) -> list[tuple[bytes, bytes]]:
    """20 s calm, then 40 s at 2.6 p/m² (elevated): one camera, one message a second."""
    msgs = []
    for t, density in enumerate([1.0] * 20 + [2.6] * 40):
        ev = {"event_id": f"drill-{t}", "sensor_id": "wy-vihara-cam-1", "zone_id": DRILL_ZONE,
              "kind": "occupancy", "ts": t0_ms + t * 1000, "count": round(density * 300)}
        msgs.append((DRILL_ZONE.encode(), orjson.dumps(ev)))
    return msgs


def test_a_drill_alerts_as_an_exercise_beside_a_real_alert(
        kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = make_settings(kafka, tmp_path / "real")
    # The drill's worker inherits the environment, as under `safetour run --drill`: the
    # tests' short windows.
    for name, value in settings_env(real).items():
        if name.startswith("SAFETOUR_") and name not in ("SAFETOUR_TOPIC_PREFIX",
                                                          "SAFETOUR_APP_ID"):
            monkeypatch.setenv(name, value)
    drill = replace(drill_settings(real, time.strftime("%Y%m%d-%H%M%S")),
                    state_dir=tmp_path / "drill", web_port=free_port())
    asyncio.run(create_topics(kafka, topic_specs(real.topics)))
    real_worker = start_worker(real, tmp_path / "real-worker.log")
    try:
        drill_worker = start_run_worker(drill, tmp_path / "drill" / "worker.log")
        try:
            asyncio.run(publish(kafka, drill.topics.sensor_events,
                                drill_readings((int(time.time()) - 2 * 3600) * 1000)))
            report = {"report_id": "r-real-1", "ts": int(time.time() * 1000),
                      "lat": 16.82338, "lon": 100.2610, "category": "crush", "severity": 5,
                      "source": "staff", "lang": "th", "text": "คนเบียดกันบนสะพาน"}
            kcat_produce(kafka, real.topics.reports, [orjson.dumps(report)], "r", tmp_path)

            def both() -> Any:
                alerts = payloads(kafka, real.topics.alerts)
                drilled = [a for a in alerts if a["zone_id"] == DRILL_ZONE]
                reported = [a for a in alerts if a["reason"] == "report"]
                caps = kcat_read(kafka, real.topics.alerts_cap)
                return (drilled, reported, caps) if drilled and reported and \
                    len(caps) >= len(alerts) else None

            drilled, reported, caps = poll_until(both, timeout=60, what="both alerts",
                                                 proc=drill_worker,
                                                 log=tmp_path / "drill" / "worker.log")
        finally:
            stop_process(drill_worker, timeout=10)
    finally:
        stop_worker(real_worker)

    assert drilled[0]["level"] == "elevated"
    assert all(a["exercise"] is True for a in drilled)
    assert all(a["alert_id"].startswith("drill-") for a in drilled)
    assert [a["zone_id"] for a in reported] == ["naresuan-bridge"]
    assert "exercise" not in reported[0]
    assert not reported[0]["alert_id"].startswith("drill-")
    status = {}
    for m in caps:
        cap = ET.fromstring(m["payload"])
        status[cap.findtext(f"{{{CAP_NS}}}incidents")] = cap.findtext(f"{{{CAP_NS}}}status")
    assert {status[a["alert_id"]] for a in drilled} == {"Exercise"}
    assert status[reported[0]["alert_id"]] == "Actual"
    # The drill's density is on its own topic; none of it on the real one.
    assert any(d["zone_id"] == DRILL_ZONE and d["density"]
               for d in payloads(kafka, drill.topics.density))
    assert not [d for d in payloads(kafka, real.topics.density)
                if d["zone_id"] == DRILL_ZONE and d["density"] is not None]


def test_the_end_of_a_drill_resolves_its_open_episodes_and_no_real_one(
        kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As `safetour run --drill` ends (agents/cli.py: the worker stopped, then
    agents/drill.py): the drill's episode, still open, ends resolved on the real alerts and
    CAP topics (exercise, drill_ended, the next seq, CAP Exercise Cancel); the real episode
    open at the same time gets nothing."""
    from agents.drill import DRILL_ENDED, finish_drill  # noqa: PLC0415

    real = make_settings(kafka, tmp_path / "real")
    for name, value in settings_env(real).items():
        if name.startswith("SAFETOUR_") and name not in ("SAFETOUR_TOPIC_PREFIX",
                                                          "SAFETOUR_APP_ID"):
            monkeypatch.setenv(name, value)
    drill = replace(drill_settings(real, time.strftime("%Y%m%d-%H%M%S")),
                    state_dir=tmp_path / "drill", web_port=free_port())
    asyncio.run(create_topics(kafka, topic_specs(real.topics)))
    since_ms = int(time.time() * 1000) - 60_000
    real_worker = start_worker(real, tmp_path / "real-worker.log")
    try:
        drill_worker = start_run_worker(drill, tmp_path / "drill" / "worker.log")
        try:
            asyncio.run(publish(kafka, drill.topics.sensor_events,
                                drill_readings((int(time.time()) - 2 * 3600) * 1000)))
            report = {"report_id": "r-real-2", "ts": int(time.time() * 1000),
                      "lat": 16.82338, "lon": 100.2610, "category": "crush", "severity": 5,
                      "source": "staff", "lang": "th", "text": "คนเบียดกันบนสะพาน"}
            kcat_produce(kafka, real.topics.reports, [orjson.dumps(report)], "r", tmp_path)

            def both() -> Any:
                alerts = payloads(kafka, real.topics.alerts)
                return alerts if any(a["zone_id"] == DRILL_ZONE for a in alerts) and any(
                    a["reason"] == "report" for a in alerts) else None

            poll_until(both, timeout=60, what="both alerts", proc=drill_worker,
                       log=tmp_path / "drill" / "worker.log")
        finally:
            stop_process(drill_worker, timeout=10)
        before = payloads(kafka, real.topics.alerts)
        said: list[str] = []
        finish_drill(drill, since_ms, said.append)
        finish_drill(drill, since_ms, said.append)  # once: the second finds none open
    finally:
        stop_worker(real_worker)

    after = payloads(kafka, real.topics.alerts)
    drilled = [a for a in after if a["zone_id"] == DRILL_ZONE]
    (episode,) = {a["alert_id"] for a in drilled}
    assert [a["status"] for a in before if a["alert_id"] == episode][-1] != "resolved"
    last = drilled[-1]
    assert (last["status"], last["reason"], last["exercise"], last["level"]) == (
        "resolved", DRILL_ENDED, True, "normal")
    assert last["seq"] == max(a["seq"] for a in drilled[:-1]) + 1
    assert sum(a["reason"] == DRILL_ENDED for a in after) == 1
    assert said[0].startswith("drill over: 1 open drill episode(s) resolved")
    assert said[1].startswith("drill over: 0")
    real_ids = {a["alert_id"] for a in before if "exercise" not in a}
    assert real_ids
    assert [a for a in after if a["alert_id"] in real_ids] == \
        [a for a in before if a["alert_id"] in real_ids]  # untouched
    caps = [ET.fromstring(m["payload"]) for m in kcat_read(kafka, real.topics.alerts_cap)]
    ends = [c for c in caps if c.findtext(f"{{{CAP_NS}}}incidents") == episode
            and c.findtext(f"{{{CAP_NS}}}msgType") == "Cancel"]
    assert len(ends) == 1
    assert ends[0].findtext(f"{{{CAP_NS}}}status") == "Exercise"
