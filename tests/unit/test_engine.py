"""SimpleDensityEngine (the skeleton engine) against a straightforward reference."""

from __future__ import annotations

import random

import pytest

from schemas import Kind, SensorEvent, SensorSpec, Zone
from streams import SimpleDensityEngine

W = 60_000


def z(area: float = 200.0) -> Zone:
    return Zone("z", "โซน", "Zone", area, "moving", (
        SensorSpec("c1", Kind.OCCUPANCY, coverage_m2=40.0),
        SensorSpec("c2", Kind.OCCUPANCY, coverage_m2=60.0),
        SensorSpec("l1", Kind.LINE_COUNT),
        SensorSpec("w1", Kind.DEVICE_COUNT, calibration=2.5),
    ))


def cam(sid: str, ts: int, count: int) -> SensorEvent:
    return SensorEvent(f"{sid}-{ts}", sid, "z", Kind.OCCUPANCY, ts, count=count)


def test_cameras_combine_by_covered_area() -> None:
    e = SimpleDensityEngine([z()], window_ms=W)
    e.ingest([cam("c1", 1000, 40), cam("c2", 2000, 90)])
    (u,) = e.emit()
    # (40 + 90) people over 100 m² covered = 1.3 p/m² over the whole zone.
    assert u.density == pytest.approx(1.3)
    assert u.occupancy == pytest.approx(260.0)
    assert u.sensors == ("c1", "c2")
    assert (u.window_start_ms, u.window_end_ms) == (2000 - W, 2000)


def test_readings_leave_the_window() -> None:
    e = SimpleDensityEngine([z()], window_ms=W)
    e.ingest([cam("c1", 0, 40)])
    e.emit()
    e.ingest([cam("c2", W + 1, 60)])  # c1's reading at 0 is now outside (1, W+1]
    (u,) = e.emit()
    assert u.sensors == ("c2",)
    assert u.density == pytest.approx(1.0)


def test_line_counts_and_device_counts_fall_back_in_order() -> None:
    e = SimpleDensityEngine([z()], window_ms=W)
    e.ingest([SensorEvent("w", "w1", "z", Kind.DEVICE_COUNT, 10, devices=40)])
    (u,) = e.emit()
    assert u.occupancy == pytest.approx(100.0)  # 40 devices x 2.5
    e.ingest([SensorEvent("l", "l1", "z", Kind.LINE_COUNT, 20, entries=30, exits=50)])
    (u,) = e.emit()
    assert u.occupancy == 0  # clamped at 0, never negative
    e.ingest([SensorEvent("l2", "l1", "z", Kind.LINE_COUNT, 30, entries=70, exits=10)])
    (u,) = e.emit()
    assert u.occupancy == 60


def test_random_streams_match_reference() -> None:
    rng = random.Random(3)
    e = SimpleDensityEngine([z()], window_ms=W)
    history: list[SensorEvent] = []
    for step in range(300):
        ts = step * 1500 + rng.randint(0, 1000)
        ev = cam(rng.choice(["c1", "c2"]), ts, rng.randint(0, 300))
        history.append(ev)
        e.ingest([ev])
        (u,) = e.emit()
        end = max(h.ts_ms for h in history)
        inside = [h for h in history if end - W < h.ts_ms <= end]
        newest = {}
        for h in sorted(inside, key=lambda h: h.ts_ms):
            newest[h.sensor_id] = h
        cover = {"c1": 40.0, "c2": 60.0}
        expect = sum(h.count for h in newest.values()) / sum(cover[s] for s in newest)
        assert u.density == pytest.approx(expect, rel=1e-9)


def test_unknown_zone_is_refused() -> None:
    e = SimpleDensityEngine([z()], window_ms=W)
    ev = SensorEvent("x", "c1", "elsewhere", Kind.OCCUPANCY, 1, count=1)
    [(refused, why)] = e.ingest([ev])
    assert refused is ev
    assert why.reason.value == "unknown_zone"
    assert e.emit() == []
