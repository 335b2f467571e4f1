"""The live zone registry: the compacted ``safetour.zones.v1`` topic over the registry file.

Every worker reads every partition of the zones topic from the beginning without a consumer
group, so each one holds the whole registry. A record (key ``zone_id``, value a zone.v1 JSON
object) adds or replaces that zone; a null value (tombstone) deletes it. A record that is not
a valid zone goes to the DLQ with reason ``schema``, one that breaks a registry rule
(``streams.registry``: windows, thresholds, sensor ids unique across zones, polygons) with
reason ``registry``; either changes nothing, and the zone's previous version stays in force.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from schemas import (
    Reason,
    Rejection,
    Zone,
    ZoneRegistryError,
    dlq_headers,
    dlq_record,
    encode_dlq_record,
    parse_zone,
    zone_document,
)
from streams.pipeline import Pipeline
from streams.registry import RegistryRules, check_zone_update, sensor_owners

from ..config import Settings
from ..kafka import KafkaTarget, as_config, follow_topic

log = logging.getLogger(__name__)


async def publish_zones(kafka: KafkaTarget, topic: str, zones: Iterable[Zone]) -> int:
    """Publish every zone, each acknowledged by the broker; KafkaUnreachable if it cannot
    be reached (within the connect timeout, each send too)."""
    cfg = as_config(kafka)
    n = 0
    async with cfg.running(cfg.producer()) as producer:
        for z in zones:
            try:
                await asyncio.wait_for(producer.send_and_wait(
                    topic, orjson.dumps(zone_document(z)), key=z.zone_id.encode()),
                    cfg.connect_timeout_s)
            except (KafkaError, OSError, TimeoutError) as exc:
                raise cfg.unreachable(exc if str(exc) else "no acknowledgement within "
                                      f"{cfg.connect_timeout_s:.3g}s") from None
            n += 1
    return n


async def follow_zone_topic(
    settings: Settings, registry: dict[str, Zone], pipe: Pipeline, dlq_topic: Any
) -> None:
    """Follow the zones topic from its beginning for ever, applying each fetch to
    ``registry`` and ``pipe`` (:func:`apply_records`)."""
    rules = settings.registry_rules()
    owners = sensor_owners(registry.values())

    async def apply(records: Sequence[Any]) -> None:
        if await apply_records(records, registry, pipe, dlq_topic, rules, owners):
            log.info("zone registry updated: %d zones", len(registry))

    await follow_topic(settings.kafka, settings.topics.zones, apply, from_start=True)


async def apply_records(
    records: Sequence[Any], registry: dict[str, Zone], pipe: Pipeline, dlq_topic: Any,
    rules: RegistryRules, owners: dict[str, str],
) -> bool:
    """Apply a fetch of zones records to ``registry`` and then to ``pipe``; True if the
    registry changed. Records that break zone.v1 or a registry rule are dead-lettered and
    leave the zone as it was."""
    before, before_owners = dict(registry), dict(owners)
    accepted = [rec for rec in records
                if await _apply(rec, registry, dlq_topic, rules, owners)]
    if not accepted:
        return False
    try:
        pipe.set_zones(registry.values())
        return True
    except Exception:  # a rule the checks do not know of: find its record one at a time
        log.exception("zone registry update refused by the pipeline; applying one by one")
    _restore(registry, owners, before, before_owners)
    pipe.set_zones(registry.values())  # what was in force before this fetch
    changed = False
    for rec in accepted:
        prev, prev_owners = dict(registry), dict(owners)
        await _apply(rec, registry, dlq_topic, rules, owners)
        try:
            pipe.set_zones(registry.values())
            changed = True
        except Exception as exc:  # a record must never stop the follower
            _restore(registry, owners, prev, prev_owners)
            pipe.set_zones(registry.values())
            await _dead_letter(rec, Rejection(Reason.REGISTRY, _one_line(exc)), dlq_topic)
    return changed


def _restore(registry: dict[str, Zone], owners: dict[str, str], zones: dict[str, Zone],
             zone_owners: dict[str, str]) -> None:
    registry.clear()
    registry.update(zones)
    owners.clear()
    owners.update(zone_owners)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def _apply(
    rec: Any, registry: dict[str, Zone], dlq_topic: Any, rules: RegistryRules,
    owners: dict[str, str] | None = None,
) -> bool:
    """Apply one zones record to ``registry`` (and ``owners``, its sensor index, when the
    caller keeps one); True if the registry changed. A record that breaks zone.v1 (reason
    ``schema``) or a registry rule (reason ``registry``) is dead-lettered and changes
    nothing; no record can make this raise."""
    key = (rec.key or b"").decode(errors="replace")
    if rec.value is None:
        gone = registry.pop(key, None)
        if gone is not None and owners is not None:
            for s in gone.sensors:
                if owners.get(s.sensor_id) == key:
                    del owners[s.sensor_id]
        return gone is not None
    try:
        zone = parse_zone(orjson.loads(rec.value), f"zones record {key!r}")
        if zone.zone_id != key:
            raise ZoneRegistryError(f"record key {key!r} is not its zone_id {zone.zone_id!r}")
    except Exception as exc:  # a record must never stop the follower
        await _dead_letter(rec, Rejection(Reason.SCHEMA, _one_line(exc)), dlq_topic)
        return False
    try:
        check_zone_update(registry, zone, rules, owners)
    except Exception as exc:  # likewise
        await _dead_letter(rec, Rejection(Reason.REGISTRY, _one_line(exc)), dlq_topic)
        return False
    old = registry.get(zone.zone_id)
    registry[zone.zone_id] = zone
    if owners is not None:
        for s in old.sensors if old is not None else ():
            owners.pop(s.sensor_id, None)
        owners.update((s.sensor_id, zone.zone_id) for s in zone.sensors)
    return True


async def _dead_letter(rec: Any, rej: Rejection, dlq_topic: Any) -> None:
    key = (rec.key or b"").decode(errors="replace")
    log.warning("rejected zones record %r (%s): %s", key, rej.reason.value, rej.detail)
    try:
        record = dlq_record(rej, value=rec.value, topic=rec.topic, partition=rec.partition,
                            offset=rec.offset, timestamp_ms=rec.timestamp, key=rec.key)
        await dlq_topic.send(key=rec.key, value=encode_dlq_record(record),
                             headers=dlq_headers(rej, rec.topic, rec.partition, rec.offset))
    except Exception:  # the DLQ itself failed: say so loudly, but keep following
        log.exception("could not dead-letter zones record %r", key)
