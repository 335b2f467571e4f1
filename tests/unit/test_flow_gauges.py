"""The worker's flow gauges: ``safetour_zone_outflow_per_m_s`` says what the newest density
record says (agents/worker/worker.py ``_count``), ``safetour_zone_inflow_from_neighbour_per_min``
the inflow over the boundary counters of the newest window, counters the neighbour owns
included (``gauges``), and ``safetour_stale_neighbours`` the pairs whose spill-over is paused."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from agents.config import Settings
from agents.metrics import Metrics
from agents.worker.neighbours import apply_density_records
from agents.worker.worker import Worker
from schemas import parse_zone
from streams.engine import DensityUpdate
from streams.pipeline import Pipeline
from streams.records import Outputs, OutRecord, density_record
from streams.route import Router

T0 = 1_771_330_000_000
W = 60_000

A = parse_zone({
    "zone_id": "a", "name": {"th": "ก", "en": "A"}, "area_m2": 600, "crowd": "standing",
    "sensors": [{"sensor_id": "a-cam", "kind": "occupancy"},
                {"sensor_id": "a-door", "kind": "line_count", "width_m": 4.0}],
    # Into a from b: a's own door's entries, and the exits of b's gate (a counter b owns).
    "neighbours": [{"zone_id": "b", "counters": [{"sensor_id": "a-door", "into": "entries"},
                                                 {"sensor_id": "b-gate", "into": "exits"}]}]})
B = parse_zone({
    "zone_id": "b", "name": {"th": "ข", "en": "B"}, "area_m2": 900, "crowd": "moving",
    "sensors": [{"sensor_id": "b-cam", "kind": "occupancy"},
                {"sensor_id": "b-gate", "kind": "line_count"}],
    "neighbours": [{"zone_id": "a"}]})
C = parse_zone({"zone_id": "c", "name": {"th": "ค", "en": "C"}, "area_m2": 100,
                "crowd": "moving", "sensors": [{"sensor_id": "c-cam", "kind": "occupancy"}]})


class NoAssignment:
    def assignment(self) -> set[object]:
        return set()


@dataclass
class Rec:
    value: bytes
    key: bytes | None = None


def worker(tmp_path: Path, zone_metrics_max: int = 500) -> tuple[Worker, Metrics]:
    settings = replace(Settings.from_env({}), state_dir=tmp_path,
                       zone_metrics_max=zone_metrics_max)
    metrics = Metrics()

    async def send_state(key: bytes, value: bytes | None) -> None:
        return None

    w = Worker(settings, Pipeline([A, B, C]), metrics, producer=lambda: None,
               send_state=send_state, consumer=NoAssignment, exit=lambda code: None,
               wall=lambda: 0.0, monotonic=lambda: 0.0)
    return w, metrics


def window(zone: str, end: int, density: float = 1.0, outflow: float = float("nan"),
           flows: tuple[tuple[str, float, float], ...] = ()) -> DensityUpdate:
    return DensityUpdate(zone, end - W, end, density * 600, density, ("cam",), 0.0,
                         sensor_age_ms=(0,), outflow_per_m_s=outflow, line_flows=flows)


def count(w: Worker, *updates: DensityUpdate) -> list[dict[str, object]]:
    out = Outputs()
    out.density += [OutRecord(u.zone_id.encode(), density_record(u), []) for u in updates]
    w._count(out, w.settings.topics.sensor_events, None)
    return [orjson.loads(r.value) for r in out.density]


def outflow(m: Metrics, zone: str) -> float | None:
    return m.registry.get_sample_value("safetour_zone_outflow_per_m_s", {"zone": zone})


def test_the_outflow_gauge_is_the_newest_records_value_per_zone(tmp_path: Path) -> None:
    w, m = worker(tmp_path)
    (rec,) = count(w, window("a", T0, outflow=0.73456))
    assert outflow(m, "a") == rec["outflow_per_m_s"] == 0.735  # as published, not the raw
    count(w, window("a", T0 + 1000, outflow=0.2), window("c", T0 + 1000))
    assert outflow(m, "a") == 0.2
    assert outflow(m, "c") is None  # no counter with a width: no series


def test_the_outflow_gauge_goes_when_the_record_says_no_outflow(tmp_path: Path) -> None:
    """The door's counter stopped: the record says null, and so does the gauge (no series),
    not the last value it had."""
    w, m = worker(tmp_path)
    count(w, window("a", T0, outflow=0.6))
    (rec,) = count(w, window("a", T0 + 1000))
    assert rec["outflow_per_m_s"] is None
    assert outflow(m, "a") is None
    count(w, window("a", T0 + 2000, outflow=0.5))
    assert outflow(m, "a") == 0.5


def test_no_per_zone_flow_gauges_for_a_large_registry(tmp_path: Path) -> None:
    w, m = worker(tmp_path, zone_metrics_max=2)  # 3 zones
    count(w, window("a", T0, outflow=0.6))
    assert outflow(m, "a") is None


def drive(w: Worker, steps: int = 30, b_until: int = 30) -> tuple[dict[str, object], ...]:
    """a's windows every 5 s with its door's entries; b's records (followed: b is another
    worker's) with its gate's exits, b filling. Returns a's newest record and the b record
    a's newest window was assessed with: b's newest that ends before it (streams/alerts.py
    ``_neighbour_records``)."""
    t = w.pipe.alerts
    a_rec = b_rec = before = None
    for k in range(steps):
        end = T0 + k * 5000
        if k < b_until:
            ub = window("b", end, 1.5 + 0.01 * k, flows=(("b-gate", 4.0, 40.0 + 2 * k),))
            before, b_rec = b_rec, density_record(ub)
            apply_density_records([Rec(b_rec)], t, w.metrics)
        ua = window("a", end, 1.0, flows=(("a-door", 100.0 + 3 * k, 30.0),))
        a_rec = density_record(ua)
        t.observe(ua)
    assert a_rec is not None
    assert before is not None
    return orjson.loads(a_rec), orjson.loads(before)


def inflow(m: Metrics, zone: str, neighbour: str) -> float | None:
    return m.registry.get_sample_value("safetour_zone_inflow_from_neighbour_per_min",
                                       {"zone": zone, "neighbour": neighbour})


def test_the_inflow_gauge_sums_the_boundary_counters_the_neighbour_owns_included(
        tmp_path: Path) -> None:
    w, m = worker(tmp_path)
    a_rec, b_rec = drive(w)
    asyncio.run(w.gauges())
    (door,) = a_rec["line_flows"]  # type: ignore[misc]
    (gate,) = b_rec["line_flows"]  # type: ignore[misc]
    assert (door["sensor_id"], gate["sensor_id"]) == ("a-door", "b-gate")
    assert inflow(m, "a", "b") == door["entries_per_min"] + gate["exits_per_min"]
    assert inflow(m, "b", "a") is None  # b's boundary with a has no counters
    assert m.registry.get_sample_value("safetour_stale_neighbours") == 0


def test_a_stale_neighbour_counts_only_the_zones_own_counters_and_is_counted(
        tmp_path: Path) -> None:
    w, m = worker(tmp_path)
    a_rec, _ = drive(w, steps=30, b_until=20)  # b's last record 50 s behind a's newest
    asyncio.run(w.gauges())
    (door,) = a_rec["line_flows"]  # type: ignore[misc]
    assert inflow(m, "a", "b") == door["entries_per_min"]
    assert m.registry.get_sample_value("safetour_stale_neighbours") == 1  # (a, b)


def test_indicator_alerts_count_raises_escalations_and_notes_not_reminders(
        tmp_path: Path) -> None:
    """``safetour_indicator_alerts_total{reason}``: an alert raised or escalated by an
    indicator beyond density counts; a reminder, a deescalation, a resolve, an update and a
    density alert do not. (Before, only raises counted: a hot spot escalating an episode
    open on density was missing, though the hot-cell gauge's help points there.)"""
    w, m = worker(tmp_path)

    def alert(status: str, reason: str, **extra: object) -> OutRecord:
        doc = {"alert_id": "a:1", "zone_id": "a", "level": "high", "status": status,
               "reason": reason, "ts": "2026-02-17T12:00:00Z", **extra}
        return OutRecord(b"a", orjson.dumps(doc), [])

    out = Outputs()
    out.alerts += [alert("raised", "density"), alert("escalated", "hotspot"),
                   alert("raised", "spillover"), alert("updated", "density"),
                   alert("raised", "counter_flow"),
                   alert("raised", "counter_flow", reminder=True),
                   alert("deescalated", "hotspot"), alert("resolved", "hotspot")]
    w._count(out, w.settings.topics.sensor_events, None)

    def n(reason: str) -> float | None:
        return m.registry.get_sample_value("safetour_indicator_alerts_total",
                                           {"reason": reason})

    assert (n("hotspot"), n("spillover"), n("counter_flow")) == (1.0, 1.0, 1.0)
    assert n("density") is None


def test_the_worker_drives_the_zones_of_the_by_zone_partitions_it_holds(tmp_path: Path
                                                                       ) -> None:
    """What the neighbour follower skips unread: only zones whose by-zone partition this
    worker holds now, and none before the partition count is known or when not routed."""
    w, _ = worker(tmp_path)
    assert not w.drives("b")  # the by-zone topic's partition count is not known yet
    router = w.router.router = Router([A, B, C], 8, reports_topic=w.settings.topics.reports)
    parts = {z: router.partition_of(z) for z in "abc"}
    assert len(set(parts.values())) > 1, parts  # the case below needs two partitions
    w.restored = {parts["b"]}
    assert [z for z in "abc" if w.drives(z)] == [z for z in "abc" if parts[z] == parts["b"]]
    w.routed = False
    assert not w.drives("b")
