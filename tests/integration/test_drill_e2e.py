"""A drill end to end (`safetour run --drill`): its worker, started the way `run --drill`
starts it, reads hand-made readings on the drill's own topics and alerts on the real alerts
and CAP topics, marked as an exercise; a real worker on the same cluster alerts at the same
time, unmarked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from xml.etree import ElementTree as ET

import orjson
import pytest

from agents.config import Settings
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


@dataclass
class Drilled:
    """One drill beside a real alert, shared by this module's tests (the setup is the same):
    the real worker still running, the drill's worker stopped, as when `run --drill` ends."""

    real: Settings
    drill: Settings
    since_ms: int
    drilled: list[dict[str, Any]]
    reported: list[dict[str, Any]]
    caps: list[dict[str, Any]]


@pytest.fixture(scope="module")
def drilled(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drilled]:
    tmp = tmp_path_factory.mktemp("drill")
    real = make_settings(kafka, tmp / "real")
    # The drill's worker inherits the environment, as under `safetour run --drill`: the
    # tests' short windows.
    with pytest.MonkeyPatch.context() as mp:
        for name, value in settings_env(real).items():
            if name.startswith("SAFETOUR_") and name not in ("SAFETOUR_TOPIC_PREFIX",
                                                              "SAFETOUR_APP_ID"):
                mp.setenv(name, value)
        drill = replace(drill_settings(real, time.strftime("%Y%m%d-%H%M%S")),
                        state_dir=tmp / "drill", web_port=free_port())
        asyncio.run(create_topics(kafka, topic_specs(real.topics)))
        since_ms = int(time.time() * 1000) - 60_000
        real_worker = start_worker(real, tmp / "real-worker.log")
        try:
            drill_worker = start_run_worker(drill, tmp / "drill" / "worker.log")
            try:
                asyncio.run(publish(kafka, drill.topics.sensor_events,
                                    drill_readings((int(time.time()) - 2 * 3600) * 1000)))
                report = {"report_id": "r-real-1", "ts": int(time.time() * 1000),
                          "lat": 16.82338, "lon": 100.2610, "category": "crush",
                          "severity": 5, "source": "staff", "lang": "th",
                          "text": "คนเบียดกันบนสะพาน"}
                kcat_produce(kafka, real.topics.reports, [orjson.dumps(report)], "r", tmp)

                def both() -> Any:
                    alerts = payloads(kafka, real.topics.alerts)
                    drilled = [a for a in alerts if a["zone_id"] == DRILL_ZONE]
                    reported = [a for a in alerts if a["reason"] == "report"]
                    caps = kcat_read(kafka, real.topics.alerts_cap)
                    return (drilled, reported, caps) if drilled and reported and \
                        len(caps) >= len(alerts) else None

                got = poll_until(both, timeout=60, what="both alerts", proc=drill_worker,
                                 log=tmp / "drill" / "worker.log")
            finally:
                stop_process(drill_worker, timeout=10)
            yield Drilled(real, drill, since_ms, *got)
        finally:
            stop_worker(real_worker)


def test_a_drill_alerts_as_an_exercise_beside_a_real_alert(kafka: str, drilled: Drilled
                                                           ) -> None:
    real, drill = drilled.real, drilled.drill
    ours, reported, caps = drilled.drilled, drilled.reported, drilled.caps
    assert ours[0]["level"] == "elevated"
    assert all(a["exercise"] is True for a in ours)
    assert all(a["alert_id"].startswith("drill-") for a in ours)
    assert [a["zone_id"] for a in reported] == ["naresuan-bridge"]
    assert "exercise" not in reported[0]
    assert not reported[0]["alert_id"].startswith("drill-")
    status = {}
    for m in caps:
        cap = ET.fromstring(m["payload"])
        status[cap.findtext(f"{{{CAP_NS}}}incidents")] = cap.findtext(f"{{{CAP_NS}}}status")
    assert {status[a["alert_id"]] for a in ours} == {"Exercise"}
    assert status[reported[0]["alert_id"]] == "Actual"
    # The drill's density is on its own topic; none of it on the real one.
    assert any(d["zone_id"] == DRILL_ZONE and d["density"]
               for d in payloads(kafka, drill.topics.density))
    assert not [d for d in payloads(kafka, real.topics.density)
                if d["zone_id"] == DRILL_ZONE and d["density"] is not None]


def test_the_end_of_a_drill_resolves_its_open_episodes_and_no_real_one(
        kafka: str, drilled: Drilled) -> None:
    """As `safetour run --drill` ends (agents/cli.py: the worker stopped, then
    agents/drill.py): the drill's episode, still open, ends resolved on the real alerts and
    CAP topics (exercise, drill_ended, the next seq, CAP Exercise Cancel); the real episode
    open at the same time gets nothing."""
    from agents.drill import DRILL_ENDED, finish_drill  # noqa: PLC0415

    real, drill = drilled.real, drilled.drill
    before = payloads(kafka, real.topics.alerts)
    said: list[str] = []
    finish_drill(drill, drilled.since_ms, said.append)
    finish_drill(drill, drilled.since_ms, said.append)  # once: the second finds none open

    after = payloads(kafka, real.topics.alerts)
    ours = [a for a in after if a["zone_id"] == DRILL_ZONE]
    (episode,) = {a["alert_id"] for a in ours}
    assert [a["status"] for a in before if a["alert_id"] == episode][-1] != "resolved"
    last = ours[-1]
    assert (last["status"], last["reason"], last["exercise"], last["level"]) == (
        "resolved", DRILL_ENDED, True, "normal")
    assert last["seq"] == max(a["seq"] for a in ours[:-1]) + 1
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
