"""The live zone registry: the compacted ``safetour.zones.v1`` topic over the registry file.

Every worker reads every partition of the zones topic from the beginning without a consumer
group, so each one holds the whole registry. A record (key ``zone_id``, value a zone.v1 JSON
object) adds or replaces that zone; a null value (tombstone) deletes it. A record that is not
a valid zone goes to the DLQ with reason ``schema`` and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas import (
    Reason,
    Rejection,
    Zone,
    ZoneRegistryError,
    dlq_headers,
    dlq_record,
    encode_dlq_record,
    parse_zone,
)
from streams.pipeline import Pipeline

from .config import Settings
from .topics import partitions_of

log = logging.getLogger(__name__)


def zone_document(z: Zone) -> dict[str, Any]:
    """A :class:`Zone` as its zone.v1 JSON object."""
    doc: dict[str, Any] = {
        "zone_id": z.zone_id, "name": {"th": z.name_th, "en": z.name_en},
        "area_m2": z.area_m2, "area_estimated": z.area_estimated, "crowd": z.crowd,
        "sensors": [
            {k: v for k, v in (("sensor_id", s.sensor_id), ("kind", s.kind.wire),
                               ("calibration", s.calibration), ("coverage_m2", s.coverage_m2))
             if v is not None}
            for s in z.sensors
        ],
    }
    if z.capacity is not None:
        doc["capacity"] = z.capacity
    if z.polygon is not None:
        doc["polygon"] = [list(p) for p in z.polygon]
    if z.thresholds is not None:
        t = z.thresholds
        doc["thresholds"] = {k: v for k, v in (("elevated", t.elevated), ("high", t.high),
                                               ("critical", t.critical)) if v}
    return doc | z.extra


async def publish_zones(bootstrap: str, topic: str, zones: Iterable[Zone]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    n = 0
    try:
        for z in zones:
            await producer.send_and_wait(topic, orjson.dumps(zone_document(z)),
                                         key=z.zone_id.encode())
            n += 1
    finally:
        await producer.stop()
    return n


async def follow_zone_topic(
    settings: Settings, registry: dict[str, Zone], pipe: Pipeline, dlq_topic: Any
) -> None:
    topic = settings.topics.zones
    tps = [TopicPartition(topic, p)
           for p in await partitions_of(settings.bootstrap_servers, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            changed = False
            for records in batches.values():
                for rec in records:
                    changed |= await _apply(rec, registry, dlq_topic)
            if changed:
                pipe.set_zones(registry.values())
                log.info("zone registry updated: %d zones", len(registry))
    except asyncio.CancelledError:
        raise
    finally:
        await consumer.stop()


async def _apply(rec: Any, registry: dict[str, Zone], dlq_topic: Any) -> bool:
    key = (rec.key or b"").decode(errors="replace")
    if rec.value is None:
        return registry.pop(key, None) is not None
    try:
        zone = parse_zone(orjson.loads(rec.value), f"zones record {key!r}")
        if zone.zone_id != key:
            raise ZoneRegistryError(f"record key {key!r} is not its zone_id {zone.zone_id!r}")
    except (orjson.JSONDecodeError, ZoneRegistryError) as exc:
        rej = Rejection(Reason.SCHEMA, str(exc))
        record = dlq_record(rej, value=rec.value, topic=rec.topic, partition=rec.partition,
                            offset=rec.offset, timestamp_ms=rec.timestamp, key=rec.key)
        await dlq_topic.send(key=rec.key, value=encode_dlq_record(record),
                             headers=dlq_headers(rej, rec.topic, rec.partition, rec.offset))
        log.warning("rejected zones record %r: %s", key, exc)
        return False
    registry[zone.zone_id] = zone
    return True
