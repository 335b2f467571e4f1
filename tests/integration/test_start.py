"""Where a first start begins: SAFETOUR_START=recent (default) skips what arrived before the
last window + grace, so a worker on a topic holding hours of data is live within seconds;
from-start reads all of it (a backtest)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.config import Settings, Topics
from agents.topics import create_topics, topic_specs
from schemas import parse_ts

from .conftest import make_settings, payloads, poll_until, start_worker, stop_worker

CAMERAS = {"wat-yai-vihara": ("wy-vihara-cam-1", 300), "naresuan-bridge": ("nb-cam-west", 500),
           "station-forecourt": ("st-cam-1", 1200), "suan-chom-nan": ("scn-cam-1", 2000)}
OLD_S = 1800  # half an hour of readings ...
AGO_MS = 3 * 3600 * 1000  # ... that arrived three hours ago
FRESH_S = 20
# A 60 s window: the fresh readings stay within window + grace while the worker starts.
ENV = {"SAFETOUR_WINDOW_S": "60"}


def readings(t0: int, seconds: int, tag: str) -> list[tuple[bytes, bytes, int]]:
    out = []
    for t in range(seconds):
        for zone, (cam, cov) in CAMERAS.items():
            ev = {"event_id": f"{cam}-{tag}-{t}", "sensor_id": cam, "zone_id": zone,
                  "kind": "occupancy", "ts": t0 + t * 1000, "count": cov // 2}
            out.append((zone.encode(), orjson.dumps([ev]), t0 + t * 1000))
    return out


async def publish(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes, int]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for key, value, ts in msgs:
            await producer.send(topic, value, key=key, timestamp_ms=ts)
        await producer.flush()
    finally:
        await producer.stop()


def with_input(s: Settings, topic: str) -> Settings:
    return replace(s, topics=Topics(s.topics.prefix, topic))


def density(s: Settings) -> list[dict[str, Any]]:
    return payloads(s.bootstrap, s.topics.density)


@pytest.mark.slow
def test_a_first_start_skips_hours_old_input_and_from_start_reads_it(
    kafka: str, tmp_path: Path
) -> None:
    src = make_settings(kafka, tmp_path)
    # The broker stamps arrivals (LogAppendTime); here the test stamps them itself, so the
    # topic can hold input that arrived hours ago.
    specs = [replace(spec, config={**spec.config, "message.timestamp.type": "CreateTime"})
             if spec.name == src.topics.sensor_events else spec
             for spec in topic_specs(src.topics)]
    asyncio.run(create_topics(kafka, specs))
    now = int(time.time() * 1000)
    old = readings(now - AGO_MS, OLD_S, "old")
    fresh = readings(now - FRESH_S * 1000, FRESH_S, "fresh")
    asyncio.run(publish(kafka, src.topics.sensor_events, old + fresh))
    cutoff = now - AGO_MS + OLD_S * 1000 + 60_000  # any window ending before: old input

    runs = {}
    for mode in ("recent", "from-start"):
        s = with_input(make_settings(kafka, tmp_path / mode), src.topics.sensor_events)
        s.state_dir.mkdir()
        asyncio.run(create_topics(kafka, topic_specs(s.topics)))  # outputs of its own
        log = s.state_dir / "worker.log"
        started = time.monotonic()
        proc = start_worker(s, log, SAFETOUR_START=mode,
                            SAFETOUR_SENSOR_TOPIC=s.topics.sensor_events, **ENV)
        try:
            def live(s: Settings = s) -> list[dict[str, Any]] | None:
                ups = density(s)
                zones = {u["zone_id"] for u in ups
                         if u["readings"] and parse_ts(u["window_end"]) >= now - 60_000}
                return ups if zones == set(CAMERAS) else None

            ups = poll_until(live, timeout=60, what=f"live windows ({mode})", proc=proc, log=log)
            runs[mode] = (ups, time.monotonic() - started, log.read_text())
        finally:
            stop_worker(proc)

    ups, took, text = runs["recent"]
    assert not [u for u in ups if parse_ts(u["window_end"]) < cutoff], "old input was read"
    assert "SAFETOUR_START=recent" in text
    assert took < 30, f"recent: live after {took:.0f} s"
    ups, _, text = runs["from-start"]
    old_windows = [u for u in ups if u["readings"] and parse_ts(u["window_end"]) < cutoff]
    assert len(old_windows) >= len(CAMERAS) * OLD_S // 2  # the old input, every zone
    assert "replaying it from the start" in text
