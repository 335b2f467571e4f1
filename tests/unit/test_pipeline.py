"""The broker-free pipeline: decode, dead-letter with reasons, density, alerts."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
import pytest

import schemas
from schemas import Kind, SensorSpec, Zone
from streams.pipeline import Pipeline
from streams.records import SourceMessage

T0 = 1_771_150_000_000  # 2026-02-15T10:06:40Z
FIXED_NOW = datetime(2026, 2, 15, 12, 0, tzinfo=UTC)


def zone(zone_id: str = "vihara", area: float = 100.0, crowd: str = "standing") -> Zone:
    return Zone(zone_id, "วิหาร", "Vihara", area, crowd,
                (SensorSpec("cam", Kind.OCCUPANCY, coverage_m2=50.0),))


def occ(event_id: str, count: int, ts: int, zone_id: str = "vihara") -> dict[str, Any]:
    return {"event_id": event_id, "sensor_id": "cam", "zone_id": zone_id, "kind": "occupancy",
            "ts": ts, "count": count, "coverage_m2": 50.0}


def msg(value: Any, offset: int = 0, raw: bool = False, ts: int | None = None) -> SourceMessage:
    """A consumed message; ``ts`` is its broker timestamp (default: the event's own time,
    as if it arrived at once)."""
    data = value if raw else orjson.dumps(value)
    if ts is None and not raw and isinstance(value, dict) and isinstance(value.get("ts"), int):
        ts = value["ts"]
    return SourceMessage("sensors", 3, offset, T0 if ts is None else ts, b"vihara", data)


def schema(name: str) -> jsonschema.Draft202012Validator:
    doc = json.loads(schemas.schema_file(name).read_text())
    return jsonschema.Draft202012Validator(doc)


@pytest.mark.kernels
def test_bad_input_goes_to_dlq_with_reason_and_good_neighbours_are_processed() -> None:
    p = Pipeline([zone()], clock=lambda: FIXED_NOW)
    batch = [occ("a", 100, T0), {"event_id": "b", "kind": "occupancy"}, occ("c", 150, T0 + 1000)]
    out = p.process_sensor_batch([
        msg(b"not json{", offset=10, raw=True),
        msg(batch, offset=11),
        msg(occ("d", 10, T0, zone_id="nowhere"), offset=12),
        msg(b"x" * (schemas.MAX_MESSAGE_BYTES + 1), offset=13, raw=True),
    ], now_ms=T0)
    dlq = sorted((orjson.loads(r.value) for r in out.dlq), key=lambda d: d["source"]["offset"])
    assert [(d["reason"], d["source"]["offset"], d["index"]) for d in dlq] == [
        ("not_json", 10, None), ("schema", 11, 1), ("unknown_zone", 12, None),
        ("too_large", 13, None),
    ]
    validator = schema("dlq-record.v1.json")
    for d in dlq:
        validator.validate(d)
        assert d["source"]["topic"] == "sensors"
        assert d["source"]["partition"] == 3
        assert d["dead_lettered_at"] == "2026-02-15T12:00:00.000Z"
    assert base64.b64decode(dlq[0]["value_b64"]) == b"not json{"
    assert orjson.loads(base64.b64decode(dlq[1]["value_b64"])) == batch
    assert "/1" in dlq[1]["detail"]
    assert out.events_in == 3  # a, c and the unknown-zone event were decoded
    assert dict(out.rejected) == {"not_json": 1, "schema": 1, "unknown_zone": 1, "too_large": 1}
    # The good events a and c reached the engine; their windows close once the watermark
    # passes (here the wall clock, 10 minutes on): (100 + 150) people over 2 x 50 m².
    later = p.tick(T0 + 600_000)
    densities = [orjson.loads(r.value) for r in later.density]
    assert {d["zone_id"] for d in densities} == {"vihara"}
    with_data = [d for d in densities if d["density"] is not None]
    assert with_data
    assert with_data[0]["density"] == pytest.approx(2.5)
    assert with_data[0]["readings"] == 2
    assert densities[-1]["density"] is None  # then the zone went quiet: reported blind, once
    assert ("safetour-reason", b"not_json") in [r.headers[0] for r in out.dlq]


@pytest.mark.kernels
def test_surge_produces_one_episode_with_lifecycle() -> None:
    p = Pipeline([zone()])
    validator = schema("alert.v1.json")
    statuses = []
    ids = set()
    # density = count / 50 m²: 1 -> 2.5 (elevated) -> 4 (high) -> 6 (critical) -> 4 -> 1
    for i, count in enumerate([50, 125, 200, 300, 200, 50]):
        # A step every 2 minutes (a reading every 20 s), so the window holds one step.
        out = p.process_sensor_batch(
            [msg(occ(f"e{i}-{j}", count, T0 + i * 120_000 + j * 20_000), offset=6 * i + j)
             for j in range(6)], now_ms=T0 + i * 120_000 + 100_000)
        if i == 5:
            out.alerts += p.tick(T0 + 30 * 60_000).alerts
        for r in out.alerts:
            a = orjson.loads(r.value)
            validator.validate(a)
            statuses.append((a["status"], a["level"]))
            ids.add(a["alert_id"])
    assert statuses == [
        ("raised", "elevated"), ("escalated", "high"), ("escalated", "critical"),
        ("deescalated", "high"), ("deescalated", "elevated"), ("resolved", "normal"),
    ]
    assert len(ids) == 1


@pytest.mark.kernels
def test_replaying_the_same_input_gives_identical_alerts() -> None:
    def run() -> list[bytes]:
        p = Pipeline([zone()])
        out = []
        for i, c in enumerate([50, 300, 50, 300, 50]):
            out += [r.value for r in p.process_sensor_batch(
                [msg(occ(f"e{i}-{j}", c, T0 + i * 120_000 + j * 20_000), offset=6 * i + j)
                 for j in range(6)], now_ms=T0 + i * 120_000 + 100_000).alerts]
        return out + [r.value for r in p.tick(T0 + 3_600_000).alerts]

    first, second = run(), run()
    assert first == second
    ids = {orjson.loads(v)["alert_id"] for v in first}
    assert len(ids) == 2  # two separate episodes, each with its own stable id
    statuses = [orjson.loads(v)["status"] for v in first]
    assert statuses.count("raised") == 2
    assert statuses.count("resolved") == 2
    assert statuses[-1] == "resolved"


def test_a_report_delivered_again_counts_once() -> None:
    """At-least-once delivery (a fetch routed again after a crash) repeats a report: the
    repeats do not count as corroborating reports of their own."""
    sensorless = Zone("lawn", "สนาม", "Lawn", 500.0, "standing", ())
    pipe = Pipeline([sensorless])

    def report(rid: str, ts: int) -> SourceMessage:
        value = {"report_id": rid, "ts": ts, "category": "overcrowding", "source": "tourist",
                 "zone_id": "lawn"}
        return SourceMessage("reports", 0, 0, ts, b"lawn", orjson.dumps(value))

    again = [report("r1", T0), report("r1", T0), report("r1", T0 + 1000)]
    assert pipe.process_report_batch(again).alerts == []
    three = pipe.process_report_batch([report("r2", T0 + 2000), report("r3", T0 + 3000)])
    assert [orjson.loads(a.value)["level"] for a in three.alerts] == ["elevated"]


def test_evidence_lists_reports_by_time_whatever_order_they_arrived_in() -> None:
    """Reports reach a zone through several partitions: after a crash they may interleave
    otherwise, and the alerts published again must be the same records."""
    sensorless = Zone("lawn", "สนาม", "Lawn", 500.0, "standing", ())

    def report(rid: str, ts: int) -> SourceMessage:
        value = {"report_id": rid, "ts": ts, "category": "overcrowding", "source": "tourist",
                 "zone_id": "lawn"}
        return SourceMessage("reports", 0, 0, ts, b"lawn", orjson.dumps(value))

    reps = [report(f"r{i}", T0 + i * 1000) for i in range(3)]
    alerts = []
    # The third report raises the zone (three witnesses); the first two came in either order.
    for order in (reps, [reps[1], reps[0], reps[2]]):
        pipe = Pipeline([sensorless])
        out = [a for r in order for a in pipe.process_report_batch([r]).alerts]
        alerts.append([orjson.loads(a.value) for a in out])
    assert alerts[0] == alerts[1]
    assert [r["report_id"] for r in alerts[0][0]["evidence"]["reports"]] == ["r0", "r1", "r2"]
