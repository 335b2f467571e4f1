"""Scale-out: three workers in one consumer group share the partitions; one leaves and comes
back mid-stream, and every zone's alert lifecycle still comes out whole, once."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.topics import create_topics, topic_specs

from .conftest import free_port, make_settings, payloads, poll_until, start_worker, stop_worker
from .test_recovery import publish

ZONES = {  # zone -> (camera, coverage m²)
    "wat-yai-vihara": ("wy-vihara-cam-1", 300), "naresuan-bridge": ("nb-cam-west", 500),
    "station-forecourt": ("st-cam-1", 1200), "suan-chom-nan": ("scn-cam-1", 2000),
    "songkran-street": ("sk-cam-1", 800),
}
SCRIPT = [(20, 1.0), (40, 2.6), (40, 4.0), (60, 6.0), (60, 4.0), (90, 1.0)]
EXPECTED = [("raised", "elevated"), ("escalated", "high"), ("escalated", "critical"),
            ("deescalated", "high"), ("resolved", "normal")]


def readyz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            doc: dict[str, Any] = orjson.loads(r.read())
            return doc
    except OSError as exc:  # 503 while not ready is an HTTPError, an OSError
        body = getattr(exc, "read", lambda: b"{}")()
        return orjson.loads(body or b"{}") if body else {}


def stream(t0: int) -> list[tuple[bytes, bytes]]:
    msgs, t = [], 0
    for seconds, density in SCRIPT:
        for _ in range(seconds):
            for zone, (cam, cov) in ZONES.items():
                # Moving zones have lower levels: scale so every zone walks all of them.
                scale = 1.0 if zone in ("wat-yai-vihara", "station-forecourt",
                                        "suan-chom-nan") else 0.7
                ev = {"event_id": f"{cam}-{t}", "sensor_id": cam, "zone_id": zone,
                      "kind": "occupancy", "ts": t0 + t * 1000,
                      "count": round(density * scale * cov)}
                msgs.append((zone.encode(), orjson.dumps(ev)))
            t += 1
    return msgs


@pytest.mark.slow
def test_three_workers_share_partitions_and_survive_a_leave_and_join(
    kafka: str, tmp_path: Path
) -> None:
    base = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(base.topics)))
    ports = [free_port() for _ in range(3)]
    env = {"SAFETOUR_SNAPSHOT_S": "0.5"}
    procs = {}
    try:
        for i, port in enumerate(ports):
            s = replace(base, web_port=port)
            procs[i] = start_worker(s, tmp_path / f"worker-{i}.log", **env)

        def spread() -> Any:
            parts = [set(readyz(p).get("partitions", [])) for p in ports]
            ready = all(readyz(p).get("ready") for p in ports)
            ok = ready and all(parts) and set().union(*parts) == set(range(8)) and \
                sum(len(x) for x in parts) == 8
            return parts if ok else None

        parts = poll_until(spread, timeout=60, what="partitions spread over 3 workers")
        assert all(1 <= len(x) <= 4 for x in parts)

        msgs = stream((int(time.time()) - 3600) * 1000)
        third = len(msgs) // 3
        asyncio.run(publish(kafka, base.topics.sensor_events, msgs[:third]))
        # Worker 2 leaves mid-stream; its partitions move to the other two.
        stop_worker(procs.pop(2))
        poll_until(lambda: set().union(*[set(readyz(p).get("partitions", []))
                                         for p in ports[:2]]) == set(range(8))
                   and all(readyz(p).get("ready") for p in ports[:2]),
                   timeout=60, what="two workers holding all partitions")
        asyncio.run(publish(kafka, base.topics.sensor_events, msgs[third:2 * third]))
        # ... and joins again.
        procs[2] = start_worker(replace(base, web_port=ports[2]), tmp_path / "worker-2.log",
                                **env)
        poll_until(spread, timeout=60, what="partitions spread over 3 workers again")
        asyncio.run(publish(kafka, base.topics.sensor_events, msgs[2 * third:]))

        def lifecycles() -> Any:
            alerts = payloads(kafka, base.topics.alerts)
            done = {a["zone_id"] for a in alerts if a["status"] == "resolved"}
            return alerts if done >= set(ZONES) else None

        alerts = poll_until(lifecycles, timeout=120, what="every zone's episode to resolve")
    finally:
        for p in procs.values():
            stop_worker(p)
    for zone in ZONES:
        mine = [a for a in alerts if a["zone_id"] == zone]
        # A replay after a rebalance may publish an alert again: the same record exactly
        # (deterministic id, same content), which notifiers drop by idempotency key.
        unique: dict[tuple[str, str, str], dict[str, Any]] = {}
        for a in mine:
            key = (a["alert_id"], a["status"], a["ts"])
            assert unique.setdefault(key, a) == a, f"conflicting duplicate for {key}"
        steps = [(a["status"], a["level"]) for a in unique.values()]
        assert steps == EXPECTED, f"{zone}: {steps}"
        assert len({a["alert_id"] for a in mine}) == 1
