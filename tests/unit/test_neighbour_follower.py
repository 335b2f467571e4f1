"""The neighbour follower (agents/worker/neighbours.py): density records of other workers'
zones reach the alert tracker for the spill-over; anything else is counted and skipped."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
import pytest

from agents.metrics import Metrics
from agents.worker.neighbours import StaleNeighbours, apply_density_records
from schemas import parse_zone
from streams.alerts import AlertTracker
from streams.engine import DensityUpdate
from streams.records import density_record

T0 = 1_771_330_000_000


@dataclass
class Rec:
    value: bytes | None
    key: bytes | None = None
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


def rec(zone: str, end: int, key: bytes | None = None) -> Rec:
    return Rec(density_record(DensityUpdate(zone, end - 60_000, end, 900.0, 1.0, (), 0.1)),
               key)


def test_neighbour_records_are_kept_the_rest_counted_and_skipped() -> None:
    t, m = tracker(), Metrics()
    counts = apply_density_records(
        [rec("b", T0), rec("b", T0 - 5000), rec("c", T0), Rec(b"not json"), Rec(None),
         Rec(orjson.dumps([1])), Rec(orjson.dumps({"zone_id": "b"}))], t, m)
    assert counts == {"kept": 1, "ignored": 2, "bad": 4}
    assert m.neighbour_records.labels("bad")._value.get() == 4
    assert t.neighbour_record(DensityUpdate("b", T0 - 55_000, T0 + 5000, 1.0, 1.0, ()))


def test_records_are_judged_by_their_key_before_they_are_parsed() -> None:
    """A keyed record of a zone that neighbours none of the registry's, or of one driven
    here, is ignored unread: even a value that is not JSON is not counted bad."""
    t = tracker()
    driven: set[str] = set()
    recs = [Rec(b"not json", b"c"), rec("c", T0, b"c"), rec("b", T0, b"b"), Rec(b"{", b"b")]
    assert apply_density_records(recs, t, driven_here=driven.__contains__) == {
        "kept": 1, "ignored": 2, "bad": 1}
    driven.add("b")  # b's partition is held here now: its records are this worker's own
    assert apply_density_records([rec("b", T0 + 5000, b"b"), Rec(b"{", b"b")], t,
                                 driven_here=driven.__contains__) == {
        "kept": 0, "ignored": 2, "bad": 0}
    # Not handed over: the record of T0 + 5000 is still new to the tracker.
    assert t.neighbour_record(DensityUpdate("b", T0 - 55_000, T0 + 5000, 1.0, 1.0, ()))


# -- a neighbour whose worker died ------------------------------------------------------------
def b_rec(end: int, k: int) -> Rec:
    """b filling (2.4 p/m² and rising, above 0.8 x its elevated 1.08: a moving crowd)."""
    return Rec(density_record(DensityUpdate("b", end - 60_000, end, 900 * (1.5 + 0.01 * k),
                                            1.5 + 0.01 * k, ("b-cam",), 0.12,
                                            sensor_age_ms=(0,))))


RISE_FROM = 17  # a's inflow from b rises from this window on


def a_window(end: int, k: int) -> DensityUpdate:
    """a flat at 1.0 p/m², the inflow over its door from b steady, then rising."""
    inflow = 150.0 + 12 * max(0, k - RISE_FROM)
    return DensityUpdate("a", end - 60_000, end, 600.0, 1.0, ("a-cam",), 0.0,
                         sensor_age_ms=(0,), line_flows=(("d", inflow, 30.0),))


def run(b_until_k: int, steps: int = 60, t: AlertTracker | None = None,
        m: Metrics | None = None) -> list[dict[str, object]]:
    """a's windows every 5 s; b's records reach the follower while k < ``b_until_k`` (then
    b's worker dies: no more records), and the stale report is taken as a worker would."""
    t = t or tracker()
    alerts: list[dict[str, object]] = []
    for k in range(steps):
        end = T0 + k * 5000
        if k < b_until_k:
            apply_density_records([b_rec(end, k)], t, m)
        alerts += t.observe(a_window(end, k))
    return alerts


def spills(alerts: list[dict[str, object]]) -> list[dict[str, object]]:
    return [a for a in alerts if a["reason"] == "spillover"]


def test_a_spill_over_needs_the_neighbours_records_a_dead_neighbour_gives_none() -> None:
    assert spills(run(b_until_k=60))  # b alive: the rising inflow and b filling raise it
    # b's worker dies at k = 10; a's inflow rises from k = 17, when b's last record (k = 9)
    # is 40 s behind (stale_s: 30 s): it has aged out, and the rising inflow alone raises
    # nothing, however long it rises.
    assert not spills(run(b_until_k=RISE_FROM - 7))


def test_a_dead_neighbour_is_reported_stale_and_fresh_again(
        caplog: pytest.LogCaptureFixture) -> None:
    t, m = tracker(), Metrics()
    report = StaleNeighbours()
    run(b_until_k=3, steps=6, t=t, m=m)  # b's last record at k = 2, a's window at k = 5
    report.update(t, m)
    assert t.stale_neighbours() == []  # 15 s behind: within stale_s (30 s)
    assert m.stale_neighbours._value.get() == 0
    for k in range(6, 10):  # a's windows go on; b's last record is now 35 s behind
        t.observe(a_window(T0 + k * 5000, k))
    with caplog.at_level(logging.WARNING, "agents.worker.neighbours"):
        report.update(t, m)
        report.update(t, m)  # said once, not at every gauge pass
    assert t.stale_neighbours() == [("a", "b")]
    assert m.stale_neighbours._value.get() == 1
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert warned[0].startswith(
        "spill-over paused: no density record of neighbour(s) b within 30 s")
    caplog.clear()
    apply_density_records([b_rec(T0 + 9 * 5000, 9)], t, m)  # b's worker is back
    with caplog.at_level(logging.INFO, "agents.worker.neighbours"):
        report.update(t, m)
    assert t.stale_neighbours() == []
    assert m.stale_neighbours._value.get() == 0
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_a_zone_without_windows_yet_reports_nothing_stale() -> None:
    t = tracker()
    assert t.stale_neighbours() == []
    t.observe(a_window(T0, 0))
    assert t.stale_neighbours() == [("a", "b")]  # a has a window, b never had a record
