"""Crash and recover: kill -9 the worker mid-run, restart it, and every emitted density
window and alert equals those of a run that was never interrupted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.config import Settings
from agents.topics import create_topics, topic_specs

from .conftest import (
    kcat_count,
    make_settings,
    payloads,
    poll_until,
    start_worker,
    stop_worker,
)

CAMERAS = {  # zone -> (camera, coverage m²), from deploy/zones/phitsanulok.yaml
    "wat-yai-vihara": ("wy-vihara-cam-1", 300), "naresuan-bridge": ("nb-cam-west", 500),
    "station-forecourt": ("st-cam-1", 1200), "suan-chom-nan": ("scn-cam-1", 2000),
}
SECONDS = 1800
T0 = (int(time.time()) - 3 * 3600) * 1000  # a recorded evening, three hours ago


def messages() -> list[tuple[bytes, bytes]]:
    """One gateway message per zone per second; densities ramp through every level."""
    out = []
    for t in range(SECONDS):
        for k, (zone, (cam, cov)) in enumerate(CAMERAS.items()):
            density = 0.3 + 6.5 * max(0.0, 1 - abs(t - 900 - 60 * k) / 300)
            ev = {"event_id": f"{cam}-{t}", "sensor_id": cam, "zone_id": zone,
                  "kind": "occupancy", "ts": T0 + t * 1000, "count": round(density * cov)}
            out.append((zone.encode(), orjson.dumps([ev])))
    return out


async def publish(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for key, value in msgs:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def finished(s: Settings) -> Any:
    """All zones reported blind after their last reading: the run is complete."""
    ups = payloads(s.bootstrap, s.topics.density)
    end = T0 + SECONDS * 1000
    blind = {u["zone_id"] for u in ups if u["density"] is None
             and u["window_end"] > time.strftime("%Y", time.gmtime(0)) and
             _ms(u["window_end"]) > end}
    return ups if blind == set(CAMERAS) else None


def _ms(rfc3339: str) -> int:
    from schemas import parse_ts  # noqa: PLC0415

    return parse_ts(rfc3339)


def windows(ups: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for u in ups:
        key = (u["zone_id"], u["window_end"])
        assert out.get(key, u) == u, f"a replayed window differs: {out[key]} != {u}"
        out[key] = u
    return out


def alerts(s: Settings) -> set[tuple[str, str, str, str]]:
    return {(a["alert_id"], a["status"], a["level"], a["ts"])
            for a in payloads(s.bootstrap, s.topics.alerts)}


@pytest.mark.slow
def test_kill_9_mid_run_then_restart_gives_the_same_outputs(kafka: str, tmp_path: Path) -> None:
    msgs = messages()
    # Small batches and frequent snapshots: the kill lands mid-run, after a snapshot.
    env = {"SAFETOUR_BATCH_MAX": "4", "SAFETOUR_SNAPSHOT_S": "0.2"}
    runs = {}
    for name in ("steady", "crashed"):
        s = make_settings(kafka, tmp_path / name)
        s.state_dir.mkdir()
        asyncio.run(create_topics(kafka, topic_specs(s.topics)))
        runs[name] = s
    steady = runs["steady"]
    asyncio.run(publish(kafka, steady.topics.sensor_events, msgs))
    proc = start_worker(steady, steady.state_dir / "worker.log", **env)
    try:
        expected = poll_until(lambda: finished(steady), timeout=120, what="steady run done")
    finally:
        stop_worker(proc)
    crashed = runs["crashed"]
    log = crashed.state_dir / "worker.log"
    half = len(msgs) // 2
    asyncio.run(publish(kafka, crashed.topics.sensor_events, msgs[:half]))
    proc = start_worker(crashed, log, **env)
    try:
        poll_until(lambda: kcat_count(kafka, crashed.topics.state), timeout=60, every=0.05,
                   what="a first snapshot", proc=proc, log=log)
        # The second half arrives and the worker dies in the middle of it.
        asyncio.run(publish(kafka, crashed.topics.sensor_events, msgs[half:]))
        proc.kill()
        proc.wait()
        partial = kcat_count(kafka, crashed.topics.density)
        assert partial < len(expected), "the worker finished before it could be killed"
        proc = start_worker(crashed, log, **env)
        got = poll_until(lambda: finished(crashed), timeout=120, what="recovered run done",
                         proc=proc, log=log)
    finally:
        stop_worker(proc)
    assert "restored" in log.read_text()
    assert windows(got) == windows(expected)
    assert alerts(crashed) == alerts(steady)
    assert {a[1] for a in alerts(steady)} >= {"raised", "escalated", "resolved"}


def committed(kafka: str, group: str) -> int:
    """Sum of the group's committed offsets (messages it has marked done)."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    async def go() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return sum(o.offset for tp, o in offsets.items() if "sensor-events" in tp.topic)

    return asyncio.run(go())


@pytest.mark.slow
def test_kill_9_before_any_snapshot_replays_from_the_start(kafka: str, tmp_path: Path) -> None:
    # No snapshot ever (the interval is longer than the test): recovery must replay each
    # partition from offset 0. aiokafka's seek_to_committed ignores a committed 0, so a
    # worker that only commits 0 resumes at the old position with empty state (found by
    # the benchmark: every window after the restart differed).
    msgs = messages()[: len(messages()) // 2]
    env = {"SAFETOUR_SNAPSHOT_S": "100000"}
    s = make_settings(kafka, tmp_path)
    s.state_dir.mkdir(exist_ok=True)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    asyncio.run(publish(kafka, s.topics.sensor_events, msgs))
    log = s.state_dir / "worker.log"
    proc = start_worker(s, log, **env)
    try:
        # Killed once faust has committed everything it read: the restart must not trust
        # that position, since no snapshot holds the state that goes with it.
        poll_until(lambda: committed(kafka, s.app_id) >= len(msgs), timeout=60,
                   what="the worker to commit its input", proc=proc, log=log)
        proc.kill()
        proc.wait()
        assert kcat_count(kafka, s.topics.state) == 0
        before = kcat_count(kafka, s.topics.density)
        proc = start_worker(s, log, **env)
        # The replay re-emits every window from the first one: twice the count at least.
        poll_until(lambda: kcat_count(kafka, s.topics.density) >= 2 * before - 50,
                   timeout=90, what="the replay from the start", proc=proc, log=log)
    finally:
        stop_worker(proc)
    assert "no snapshot; replaying it from the start" in log.read_text()
    windows(payloads(kafka, s.topics.density))  # every replayed window equals the first
