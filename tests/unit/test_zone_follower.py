"""The zones-topic follower (agents/worker/zones.py): a bad record is dead-lettered, the zone's
previous version stays in force, and no record can make it raise."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

import schemas
from agents.config import Settings
from agents.worker.zones import _apply, apply_records, zone_document
from schemas import Zone, load_zones
from streams.registry import sensor_owners

REPO = Path(__file__).resolve().parents[2]
SETTINGS = Settings.from_env({})
RULES = SETTINGS.registry_rules()


@dataclass
class Rec:
    """The fields of an aiokafka ConsumerRecord the follower reads."""

    key: bytes | None
    value: bytes | None
    topic: str = "safetour.zones.v1"
    partition: int = 0
    offset: int = 7
    timestamp: int = 1771158600000


@dataclass
class FakeDLQ:
    sent: list[dict[str, Any]]

    async def send(self, *, key: bytes | None, value: bytes, headers: Any) -> None:
        self.sent.append(orjson.loads(value) | {"_headers": headers})

    @property
    def reasons(self) -> list[str]:
        return [r["reason"] for r in self.sent]


def registry() -> dict[str, Zone]:
    return {z.zone_id: z for z in load_zones(REPO / "deploy/zones/phitsanulok.yaml")}


def record(doc: dict[str, Any] | bytes, key: str | None = None) -> Rec:
    if isinstance(doc, bytes):
        return Rec((key or "x").encode(), doc)
    return Rec((key or doc["zone_id"]).encode(), orjson.dumps(doc))


def vihara(**changes: Any) -> dict[str, Any]:
    return zone_document(registry()["wat-yai-vihara"]) | changes


def apply(rec: Rec, reg: dict[str, Zone], dlq: FakeDLQ) -> bool:
    return asyncio.run(_apply(rec, reg, dlq, RULES, sensor_owners(reg.values())))


@pytest.mark.parametrize(("doc", "reason", "detail"), [
    (vihara(slide_s=7), "registry", "zone 'wat-yai-vihara': window_s 60 is not a whole number"),
    (vihara(thresholds={"critical": 3}), "registry", "thresholds must rise"),
    (vihara(sensors=[{"sensor_id": "nb-cam-west", "kind": "occupancy"}]), "registry",
     "sensor 'nb-cam-west' is already listed in zone 'naresuan-bridge'"),
    (vihara(polygon=[[16.8, 100.26], [16.81, 100.28], [16.81, 100.26], [16.8, 100.27]]),
     "registry", "polygon crosses itself"),
    (vihara(slide_s=10), "registry", "slide_s cannot change"),
    (vihara(area_m2="big"), "schema", "area_m2"),
    (b"{not json", "schema", ""),
    (b"[]", "schema", "must be an object"),
    (b'{"zone_id": "x", "name": {"th": "a", "en": "b"}, "area_m2": 1' + b"0" * 400
     + b', "crowd": "standing", "sensors": []}', "schema", ""),
    (vihara(), "schema", "is not its zone_id"),  # under another key
])
def test_a_bad_record_is_dead_lettered_and_the_zone_stays_as_it_was(
    doc: dict[str, Any] | bytes, reason: str, detail: str
) -> None:
    reg, dlq = registry(), FakeDLQ([])
    before = dict(reg)
    key = "wat-yai-grounds" if detail == "is not its zone_id" else None
    assert apply(record(doc, key), reg, dlq) is False
    assert reg == before
    assert reg["wat-yai-vihara"] is before["wat-yai-vihara"]
    (dead,) = dlq.sent
    assert dead["reason"] == reason
    assert detail in dead["detail"]
    assert "\n" not in dead["detail"]
    assert dead["source"]["topic"] == "safetour.zones.v1"
    assert dead["source"]["offset"] == 7
    assert ("safetour-reason", reason.encode()) in dead["_headers"]
    doc_schema = json.loads(schemas.schema_file("dlq-record.v1.json").read_text())
    jsonschema.Draft202012Validator(doc_schema).validate(
        {k: v for k, v in dead.items() if k != "_headers"})


def test_a_good_record_replaces_the_zone_and_a_tombstone_deletes_it() -> None:
    reg, dlq = registry(), FakeDLQ([])
    owners = sensor_owners(reg.values())
    rec = record(vihara(area_m2=1234.0, thresholds={"critical": 4.5}))
    assert asyncio.run(_apply(rec, reg, dlq, RULES, owners)) is True
    assert reg["wat-yai-vihara"].area_m2 == 1234.0
    assert asyncio.run(_apply(Rec(b"wat-yai-vihara", None), reg, dlq, RULES, owners)) is True
    assert "wat-yai-vihara" not in reg
    assert not any(z == "wat-yai-vihara" for z in owners.values())
    # Its sensors are free now: another zone may list them.
    grounds = zone_document(reg["wat-yai-grounds"])
    grounds["sensors"] = [*grounds["sensors"], {"sensor_id": "wy-vihara-cam-1",
                                                "kind": "occupancy"}]
    assert asyncio.run(_apply(record(grounds), reg, dlq, RULES, owners)) is True
    assert owners["wy-vihara-cam-1"] == "wat-yai-grounds"
    assert dlq.sent == []


def test_the_dlq_failing_does_not_stop_the_follower() -> None:
    class Broken:
        async def send(self, **kw: Any) -> None:
            raise RuntimeError("broker gone")

    reg = registry()
    assert asyncio.run(_apply(record(vihara(slide_s=7)), reg, Broken(), RULES)) is False
    assert reg == registry()


def test_a_fetch_with_a_bad_record_applies_the_good_ones_and_the_pipeline_keeps_running() -> None:
    reg, dlq = registry(), FakeDLQ([])
    pipe = SETTINGS.pipeline(reg.values())
    owners = sensor_owners(reg.values())
    recs = [record(vihara(slide_s=7)), record(vihara(thresholds={"high": 9})),
            record(vihara(area_m2=900.0))]
    assert asyncio.run(apply_records(recs, reg, pipe, dlq, RULES, owners)) is True
    assert dlq.reasons == ["registry", "registry"]
    assert reg["wat-yai-vihara"].area_m2 == 900.0
    assert pipe.zones["wat-yai-vihara"].area_m2 == 900.0


def test_a_record_the_engine_refuses_after_the_checks_is_dead_lettered_too() -> None:
    # Deleted, then back with another slide: the registry no longer knows the old slide, but
    # the engine does and refuses it. The fetch is re-applied one record at a time.
    reg, dlq = registry(), FakeDLQ([])
    pipe = SETTINGS.pipeline(reg.values())
    owners = sensor_owners(reg.values())
    recs = [Rec(b"wat-yai-vihara", None), record(vihara(slide_s=10)),
            record(zone_document(reg["naresuan-bridge"]) | {"area_m2": 700.0})]
    assert asyncio.run(apply_records(recs, reg, pipe, dlq, RULES, owners)) is True
    assert dlq.reasons == ["registry"]
    assert "slide cannot change" in dlq.sent[0]["detail"]
    assert "wat-yai-vihara" not in reg
    assert "wat-yai-vihara" not in pipe.zones
    assert reg["naresuan-bridge"].area_m2 == pipe.zones["naresuan-bridge"].area_m2 == 700.0
    assert owners == sensor_owners(reg.values())


def test_zone_document_round_trips_every_field_of_the_demo_registry() -> None:
    """What ``safetour zones publish`` sends reads back as the same zone: the grid and the
    line counters' widths too (the published grounds had no grid, so the worker following
    the topic dead-lettered every grid_count reading off_grid; found by the offline bench)."""
    zones = registry()
    for z in zones.values():
        doc = orjson.loads(orjson.dumps(zone_document(z)))
        assert schemas.parse_zone(doc) == z, z.zone_id
    grounds = zone_document(zones["wat-yai-grounds"])
    assert grounds["grid"] == {"cell_m": 50.0, "origin": [16.8225, 100.2612], "rows": 6,
                               "cols": 5}
    door = zone_document(zones["wat-yai-vihara"])["sensors"][2]
    assert door == {"sensor_id": "wy-vihara-door", "kind": "line_count", "width_m": 4.0}
