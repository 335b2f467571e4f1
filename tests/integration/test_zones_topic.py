"""Zones-topic records that break a registry rule are dead-lettered with reason ``registry``:
the worker stays up (also across a restart that re-reads them from the compacted topic) and
keeps alerting with the zone's previous version."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.config import Settings
from agents.topics import create_topics, topic_specs
from agents.worker.zones import zone_document
from schemas import load_zones

from .conftest import REPO, make_settings, payloads, poll_until, start_worker, stop_worker
from .test_recovery import publish

ZONE = "wat-yai-vihara"


@pytest.fixture(scope="module")
def settings(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    s = make_settings(kafka, tmp_path_factory.mktemp("state"))
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    return s


@pytest.fixture
def worker(settings: Settings) -> Iterator[Any]:
    log = settings.state_dir / "worker.log"
    procs = [start_worker(settings, log)]

    def restart() -> Any:
        stop_worker(procs[-1])
        procs.append(start_worker(settings, log))
        return procs[-1]

    try:
        yield procs[0], restart
    finally:
        stop_worker(procs[-1])


def bad_records() -> list[tuple[bytes, bytes]]:
    """Two versions of the vihara that pass zone.v1 but break a rule. Both would also blind
    the zone's camera (a million m² covered), so an alert proves neither was applied."""
    (vihara,) = (z for z in load_zones(REPO / "deploy/zones/phitsanulok.yaml")
                 if z.zone_id == ZONE)
    doc = zone_document(vihara)
    for s in doc["sensors"]:
        if s["kind"] == "occupancy":
            s["coverage_m2"] = 1_000_000
    return [(ZONE.encode(), orjson.dumps(doc | {"slide_s": 7})),  # the worker's slide is 1 s
            (ZONE.encode(), orjson.dumps(doc | {"thresholds": {"critical": 1.5}}))]


def registry_dlq(s: Settings) -> list[dict[str, Any]]:
    return [r for r in payloads(s.bootstrap, s.topics.dlq)
            if r["source"]["topic"] == s.topics.zones]


def test_bad_zone_records_are_dead_lettered_and_the_worker_keeps_alerting(
    settings: Settings, worker: Any, tmp_path: Path
) -> None:
    proc, restart = worker
    asyncio.run(publish(settings.bootstrap, settings.topics.zones, bad_records()))
    poll_until(lambda: len(registry_dlq(settings)) >= 2, timeout=30,
               what="two registry DLQ records", proc=proc)
    dead = registry_dlq(settings)
    assert [r["reason"] for r in dead] == ["registry", "registry"]
    assert "window_s 10 is not a whole number of slides (slide_s 7)" in dead[0]["detail"]
    assert "thresholds must rise" in dead[1]["detail"]
    assert proc.poll() is None

    # A restart re-reads the compacted topic: the same records are refused again, and the
    # worker comes up (start_worker waits for faust's Ready).
    proc = restart()
    poll_until(lambda: len(registry_dlq(settings)) >= 4, timeout=30,
               what="the records refused again after the restart", proc=proc)

    # The vihara still runs on the registry file's version: a surge raises critical.
    t0 = (int(time.time()) - 2 * 3600) * 1000
    msgs = []
    for t, density in enumerate([1.0] * 10 + [6.0] * 40 + [1.0] * 5):
        ev = {"event_id": f"zt-surge-{t}", "sensor_id": "wy-vihara-cam-1", "zone_id": ZONE,
              "kind": "occupancy", "ts": t0 + t * 1000, "count": round(density * 300)}
        msgs.append((ZONE.encode(), orjson.dumps(ev)))
    asyncio.run(publish(settings.bootstrap, settings.topics.sensor_events, msgs))

    def critical() -> Any:
        return [a for a in payloads(settings.bootstrap, settings.topics.alerts)
                if a["zone_id"] == ZONE and a["level"] == "critical"]

    (alert, *_) = poll_until(critical, timeout=60, what="a critical alert", proc=proc)
    assert alert["density"] >= 5.0  # the file's camera coverage, the default thresholds
    assert proc.poll() is None
    assert {r["reason"] for r in registry_dlq(settings)} == {"registry"}
