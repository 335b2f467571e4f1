"""The neighbour follower (agents/worker/neighbours.py): density records of other workers'
zones reach the alert tracker for the spill-over; anything else is counted and skipped."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from agents.metrics import Metrics
from agents.worker.neighbours import apply_density_records
from schemas import parse_zone
from streams.alerts import AlertTracker
from streams.engine import DensityUpdate
from streams.pipeline import density_record

T0 = 1_771_330_000_000


@dataclass
class Rec:
    value: bytes | None
    topic: str = "safetour.density.v1"
    partition: int = 3
    offset: int = 1


def tracker() -> AlertTracker:
    a = parse_zone({"zone_id": "a", "name": {"th": "ก", "en": "a"}, "area_m2": 600,
                    "crowd": "standing", "sensors": [{"sensor_id": "d", "kind": "line_count"}],
                    "neighbours": [{"zone_id": "b", "counters": [
                        {"sensor_id": "d", "into": "entries"}]}]})
    b = parse_zone({"zone_id": "b", "name": {"th": "ข", "en": "b"}, "area_m2": 900,
                    "crowd": "moving", "sensors": [], "neighbours": [{"zone_id": "a"}]})
    c = parse_zone({"zone_id": "c", "name": {"th": "ค", "en": "c"}, "area_m2": 900,
                    "crowd": "moving", "sensors": []})
    return AlertTracker({z.zone_id: z for z in (a, b, c)})


def rec(zone: str, end: int) -> Rec:
    return Rec(density_record(DensityUpdate(zone, end - 60_000, end, 900.0, 1.0, (), 0.1)))


def test_neighbour_records_are_kept_the_rest_counted_and_skipped() -> None:
    t, m = tracker(), Metrics()
    counts = apply_density_records(
        [rec("b", T0), rec("b", T0 - 5000), rec("c", T0), Rec(b"not json"), Rec(None),
         Rec(orjson.dumps([1])), Rec(orjson.dumps({"zone_id": "b"}))], t, m)
    assert counts == {"kept": 1, "ignored": 2, "bad": 4}
    assert m.neighbour_records.labels("bad")._value.get() == 4
    assert t.neighbour_record(DensityUpdate("b", T0 - 55_000, T0 + 5000, 1.0, 1.0, ()))
