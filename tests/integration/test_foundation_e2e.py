"""End to end through the real broker, with kcat as the integrator and the reader."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from agents.config import Settings
from schemas import MAX_MESSAGE_BYTES

from .conftest import kcat_produce, payloads, poll_until


def occ(event_id: str, zone: str, sensor: str, count: int, ts: int) -> dict[str, Any]:
    return {"event_id": event_id, "sensor_id": sensor, "zone_id": zone, "kind": "occupancy",
            "ts": ts, "count": count}


def test_valid_event_published_with_kcat_raises_alert_read_with_kcat(
    stack: Settings, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    # wy-vihara-cam-1 covers 300 m² of the vihara: 1800 people there is 6 p/m² (critical).
    # A gateway batch of the last 20 s, one reading a second: long enough for the on-delay.
    batch = [occ(f"kcat-{i}", "wat-yai-vihara", "wy-vihara-cam-1", 1800, now - (20 - i) * 1000)
             for i in range(21)]
    kcat_produce(stack.bootstrap, stack.topics.sensor_events, [orjson.dumps(batch)],
                 "wat-yai-vihara", tmp_path)

    def alert() -> Any:
        found = [a for a in payloads(stack.bootstrap, stack.topics.alerts)
                 if a["zone_id"] == "wat-yai-vihara"]
        return found

    (a,) = poll_until(alert, timeout=30, what="the alert on the alerts topic")
    assert (a["status"], a["level"]) == ("raised", "critical")
    assert a["density"] == 6.0
    assert "วิกฤต" in a["message"]["th"]


def test_garbage_goes_to_dlq_with_reasons_while_valid_events_flow(
    stack: Settings, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    good_a = occ("b-good-a", "naresuan-bridge", "nb-cam-west", 100, now)
    bad = {"event_id": "b-bad", "sensor_id": "nb-cam-east", "zone_id": "naresuan-bridge",
           "kind": "occupancy", "ts": now, "count": "many"}
    good_b = occ("b-good-b", "naresuan-bridge", "nb-cam-east", 150, now + 1)
    oversize = orjson.dumps([good_a] * (MAX_MESSAGE_BYTES // len(orjson.dumps(good_a)) + 10))
    assert MAX_MESSAGE_BYTES < len(oversize) < 1_000_000  # over our limit, under the broker's
    wrong_types = {"event_id": 7, "sensor_id": "s", "zone_id": "z", "kind": "occupancy",
                   "ts": "yesterday", "count": -1}
    values = [
        b"\x00\xffnot json at all",
        orjson.dumps(wrong_types),
        oversize,
        orjson.dumps([good_a, bad, good_b]),
        orjson.dumps(occ("after", "station-forecourt", "st-cam-1", 600, now + 2)),
    ]
    kcat_produce(stack.bootstrap, stack.topics.sensor_events, values, "mixed", tmp_path)

    def dlq() -> Any:
        recs = payloads(stack.bootstrap, stack.topics.dlq)
        return recs if len(recs) >= 4 else None

    recs = poll_until(dlq, timeout=30, what="four DLQ records")
    got = sorted((r["reason"], -1 if r["index"] is None else r["index"]) for r in recs)
    assert got == [("not_json", -1), ("schema", -1), ("schema", 1), ("too_large", -1)]
    for r in recs:
        assert r["source"]["topic"] == stack.topics.sensor_events
        assert r["source"]["offset"] >= 0
        assert r["detail"]
    batch_rec = next(r for r in recs if r["index"] == 1)
    assert "/1/count" in batch_rec["detail"]

    def density() -> Any:
        ups = payloads(stack.bootstrap, stack.topics.density)
        bridge = [u for u in ups if u["zone_id"] == "naresuan-bridge"]
        station = [u for u in ups if u["zone_id"] == "station-forecourt"]
        return (bridge, station) if bridge and station else None

    bridge, station = poll_until(density, timeout=30, what="density from the good events")
    # Both good events of the batch counted: (100 + 150) people over 2 x 500 m² covered.
    both = [u for u in bridge if u["sensors"] == ["nb-cam-east", "nb-cam-west"]]
    assert both
    assert {u["density"] for u in both} == {0.25}
    assert {u["density"] for u in station if u["density"] is not None} == {0.5}  # 600 / 1200


def test_zone_registry_updates_apply_live(stack: Settings, tmp_path: Path) -> None:
    """A zone published to the compacted zones topic is used at once, without a restart;
    a broken zones record is dead-lettered and changes nothing."""
    now = int(time.time() * 1000)
    event = occ("popup-1", "popup-stage", "popup-cam", 40, now)
    kcat_produce(stack.bootstrap, stack.topics.sensor_events, [orjson.dumps(event)],
                 "popup-stage", tmp_path)
    poll_until(lambda: [r for r in payloads(stack.bootstrap, stack.topics.dlq)
                        if r["reason"] == "unknown_zone"], timeout=30, what="unknown_zone")
    zone = {"zone_id": "popup-stage", "name": {"th": "เวทีชั่วคราว", "en": "Pop-up stage"},
            "area_m2": 200, "crowd": "standing",
            "sensors": [{"sensor_id": "popup-cam", "kind": "occupancy", "coverage_m2": 100}]}
    kcat_produce(stack.bootstrap, stack.topics.zones, [b"{not a zone"], "broken", tmp_path)
    kcat_produce(stack.bootstrap, stack.topics.zones, [orjson.dumps(zone)], "popup-stage",
                 tmp_path)

    def density() -> Any:
        event["event_id"] = f"popup-{time.monotonic_ns()}"
        event["ts"] = int(time.time() * 1000)
        kcat_produce(stack.bootstrap, stack.topics.sensor_events, [orjson.dumps(event)],
                     "popup-stage", tmp_path)
        return [u for u in payloads(stack.bootstrap, stack.topics.density)
                if u["zone_id"] == "popup-stage" and u["density"] is not None]

    (first, *_) = poll_until(density, timeout=40, what="density of the new zone", every=1.0)
    assert first["density"] == 0.4  # 40 people over the camera's 100 m²
    broken = [r for r in payloads(stack.bootstrap, stack.topics.dlq)
              if r["source"]["topic"] == stack.topics.zones]
    assert [r["reason"] for r in broken] == ["schema"]
