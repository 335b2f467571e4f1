"""The zone router against a real broker: kcat (librdkafka's default partitioner, CRC32 of the
key) and aiokafka (murmur2) publish the same zones, some in batches that mix zones; the
router's driver (agents/worker/router.py) puts each zone on exactly one by-zone partition."""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import orjson
from aiokafka import TopicPartition

from agents.config import Settings
from agents.topics import create_topics, partitions_of, topic_specs
from agents.worker.router import ZoneRouter, router_start_offsets
from schemas import load_zones
from streams.records import ORIGIN_HEADER, SourceMessage
from streams.route import zone_partition

from .conftest import KCAT, make_settings

ZONE_IDS = [f"zone-{i:02d}" for i in range(24)]


def reading(zone_id: str, n: int) -> dict[str, object]:
    return {"event_id": f"{zone_id}-{n}", "sensor_id": f"{zone_id}-cam", "zone_id": zone_id,
            "kind": "occupancy", "ts": "2026-02-15T12:00:00Z", "count": n}


async def consume_all(s: Settings, topic: str, expected: int) -> list[SourceMessage]:
    consumer = s.kafka.consumer()
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(s.kafka, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[SourceMessage] = []
        deadline = time.monotonic() + 30
        while len(out) < expected and time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=500)
            for recs in got.values():
                out.extend(SourceMessage(r.topic, r.partition, r.offset, r.timestamp, r.key,
                                         r.value, tuple(r.headers)) for r in recs)
        return out
    finally:
        await consumer.stop()


def test_kcat_and_aiokafka_partitioners_end_on_one_by_zone_partition_per_zone(
    kafka: str, tmp_path: Path
) -> None:
    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    # kcat: one reading per zone, keyed by zone_id, librdkafka's default partitioner.
    lines = b"".join(z.encode() + b":" + orjson.dumps(reading(z, 1)) + b"\n" for z in ZONE_IDS)
    subprocess.run([KCAT, "-b", kafka, "-P", "-t", s.topics.sensor_events, "-K:"],
                   input=lines, check=True, timeout=60)

    async def scenario() -> None:
        producer = s.kafka.producer()
        await producer.start()
        try:
            # aiokafka: the same zones keyed the same way (murmur2), and gateway batches that
            # mix four zones each, keyed by their first zone.
            for z in ZONE_IDS:
                await producer.send(s.topics.sensor_events, orjson.dumps(reading(z, 2)),
                                    key=z.encode())
            for i in range(0, len(ZONE_IDS), 4):
                group = ZONE_IDS[i:i + 4]
                await producer.send(s.topics.sensor_events,
                                    orjson.dumps([reading(z, 3) for z in group]),
                                    key=group[0].encode())
            await producer.flush()
            sources = await consume_all(s, s.topics.sensor_events, 2 * len(ZONE_IDS) + 6)
            assert len(sources) == 2 * len(ZONE_IDS) + 6
            # The premise, on this broker: some zone reached two source partitions.
            spread: dict[bytes, set[int]] = {}
            for m in sources:
                spread.setdefault(m.key or b"", set()).add(m.partition)
            assert any(len(p) > 1 for p in spread.values())

            zr = ZoneRouter(load_zones(s.zones_file), s.topics)
            routed = 0
            for p in sorted({m.partition for m in sources}):  # one fetch per partition
                result = await zr.route_fetch(producer, [m for m in sources if m.partition == p])
                routed += result.records
            assert zr.router is not None
            assert zr.router.partitions == 8
            assert routed == 2 * len(ZONE_IDS) + len(ZONE_IDS)  # each mixed batch: 4 records

            out = await consume_all(s, s.topics.by_zone, routed)
            assert len(out) == routed
            where: dict[str, set[int]] = {}
            readings: dict[str, set[str]] = {}
            for m in out:
                assert any(k == ORIGIN_HEADER for k, _ in m.headers)
                value = orjson.loads(m.value or b"")
                for ev in value if isinstance(value, list) else [value]:
                    where.setdefault(ev["zone_id"], set()).add(m.partition)
                    readings.setdefault(ev["zone_id"], set()).add(ev["event_id"])
            assert where == {z: {zone_partition(z, 8)} for z in ZONE_IDS}
            assert readings == {z: {f"{z}-1", f"{z}-2", f"{z}-3"} for z in ZONE_IDS}
            # Record timestamps on the by-zone topic are the original arrivals.
            arrivals = {(m.partition, m.offset): m.timestamp for m in sources}
            for m in out:
                o = orjson.loads(dict(m.headers)[ORIGIN_HEADER])
                assert m.timestamp == arrivals[(o["partition"], o["offset"])]
            # Starting the router without committed offsets: from-start is the log start,
            # recent (now) is past every record above.
            starts = await router_start_offsets(replace(s, start="from-start"),
                                                s.topics.sensor_events, range(8))
            assert set(starts.values()) == {0}
            ends = {m.partition: m.offset + 1 for m in sources}
            recent = await router_start_offsets(
                replace(s, start="recent", window_s=0.0, grace_s=0.0),
                s.topics.sensor_events, range(8), now_ms=int(time.time() * 1000) + 60_000)
            assert recent == {p: ends.get(p, 0) for p in range(8)}
        finally:
            await producer.stop()

    asyncio.run(scenario())
