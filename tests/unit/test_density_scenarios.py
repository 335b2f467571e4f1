"""Density engine scenarios as tables, each drawn as a timeline first (after quix's
``test_sliding.py``).

Every scenario uses one zone of 100 m² (``z``), cameras covering 100 m² (so count / 100 is the
density), a 3 s window, 1 s slide and 1 s grace. Buckets are ``[k, k+1)`` seconds; the window
ending at ``E`` covers ``[E-3, E)``. The watermark is the newest event time - 1 s; bucket
``[k, k+1)`` closes when the watermark reaches ``k+1`` and the zone's window is emitted then.
Rows are ``(window end in s, density or None when blind, readings in the window)``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from schemas import Kind, SensorEvent, SensorSpec, Zone
from streams import WindowedDensityEngine

ZONE = Zone("z", "โซน", "Zone", 100.0, "standing", (
    SensorSpec("cam1", Kind.OCCUPANCY, coverage_m2=100.0),
    SensorSpec("cam2", Kind.OCCUPANCY, coverage_m2=100.0),
    SensorSpec("line", Kind.LINE_COUNT),
))

Row = tuple[float, float | None, int]


def cam(eid: str, t: float, count: int, sensor: str = "cam1") -> SensorEvent:
    return SensorEvent(eid, sensor, "z", Kind.OCCUPANCY, round(t * 1000), count=count)


def line(eid: str, t: float, entries: int, exits: int = 0) -> SensorEvent:
    return SensorEvent(eid, "line", "z", Kind.LINE_COUNT, round(t * 1000), entries=entries,
                       exits=exits)


class Scenario:
    def __init__(self, zone: Zone = ZONE, *, group: bool = False) -> None:
        self.engine = WindowedDensityEngine([zone], window_ms=3000, slide_ms=1000,
                                            grace_ms=1000, idle_ms=2000, group_by_zone=group)
        self.late: list[str] = []
        self.updates: list = []

    def send(self, *events: SensorEvent) -> Scenario:
        """Events arrive one by one, each at the wall-clock time equal to its event time."""
        for ev in events:
            refused = self.engine.ingest([ev], [0], wall_ms=ev.ts_ms)
            self.late += [ev.event_id for _, why in refused if why.reason.value == "late"]
            self.updates += self.engine.emit()
        return self

    def wall(self, t: float) -> Scenario:
        """The wall clock reaches ``t`` seconds with nothing arriving."""
        self.engine.advance(round(t * 1000))
        self.updates += self.engine.emit()
        return self

    def rows(self) -> list[Row]:
        return [(u.window_end_ms / 1000, None if u.density != u.density else
                 round(u.density, 6), u.readings) for u in self.updates]


@pytest.fixture(params=[False, True], ids=["arrival-order", "zone-order"])
def group(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.mark.kernels
def test_on_time_then_quiet(group: bool) -> None:
    """
    time (s)   0    1    2    3    4    5    6    7    8
               |----|----|----|----|----|----|----|----|
    cam1         a    b    c         d
    counts      100  200  300       600
    closes           ^0   ^1,2     (d: wm 3.5 closes [1,2) and [2,3))
    wall clock 10 s, idle 2 s: the event clock moves to 8 s; wall 20 s: to 18 s.
    """
    s = Scenario(group=group).send(
        cam("a", 0.5, 100), cam("b", 1.5, 200), cam("c", 2.5, 300), cam("d", 4.5, 600))
    assert s.rows() == [(1.0, 1.0, 1), (2.0, 1.5, 2), (3.0, 2.0, 3)]
    s.wall(10)
    assert s.rows()[3:] == [(4.0, 2.5, 2), (5.0, 4.5, 2), (6.0, 6.0, 1), (7.0, 6.0, 1)]
    s.wall(20)
    # Window [5, 8) is empty: reported blind once, then nothing while the zone stays silent.
    assert s.rows()[7:] == [(8.0, None, 0)]
    s.wall(60)
    assert len(s.rows()) == 8


@pytest.mark.kernels
def test_out_of_order_within_grace_and_late_beyond_it(group: bool) -> None:
    """
    time (s)   0    1    2    3    4    5
               |----|----|----|----|----|
    arrival:        b<---a              (b at 1.8 arrives after a at 2.5: within grace)
                              c         (c at 4.2: watermark 3.2 closes [1,2) and [2,3))
                       d                (d at 2.9 arrives after c: [2,3) closed -> late)
                           e            (e at 3.3: bucket [3,4) still open -> counted)
    """
    s = Scenario(group=group).send(
        cam("a", 2.5, 100), cam("b", 1.8, 200), cam("c", 4.2, 300), cam("d", 2.9, 400),
        cam("e", 3.3, 500))
    assert s.late == ["d"]
    s.wall(20)
    assert s.rows() == [
        (2.0, 2.0, 1), (3.0, 1.5, 2), (4.0, round(800 / 300, 6), 3), (5.0, 3.0, 3),
        (6.0, 4.0, 2), (7.0, 3.0, 1), (8.0, None, 0),
    ]


@pytest.mark.kernels
def test_duplicates_count_once(group: bool) -> None:
    """
    time (s)   0    1    2
    cam1         x x'        (x' repeats event id x: a gateway resend)
    cam2          y
    """
    s = Scenario(group=group).send(
        cam("x", 0.5, 100), cam("x", 0.5, 100), cam("y", 0.6, 300, "cam2"))
    s.wall(8)
    assert s.engine.duplicates == 1
    assert s.rows()[0] == (1.0, 2.0, 2)  # (100 + 300) people over 2 x 100 m²


@pytest.mark.kernels
def test_silent_sensor_is_stale_and_stops_contributing(group: bool) -> None:
    """
    time (s)   0    1    2    3    4    5    6    7
    cam1         a    b    c    d    e    f    g
    cam2         p    q                            (cam2 falls silent after 1.6 s)
    g at 6.5: watermark 5.5 closes [4, 5): the window [2, 5) has no cam2 reading.
    """
    s = Scenario(group=group)
    for i, t in enumerate((0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5)):
        s.send(cam(f"c1-{i}", t, 100))
        if t < 2:
            s.send(cam(f"c2-{i}", t + 0.1, 300, "cam2"))
    last = s.updates[-1]
    assert last.window_end_ms == 5000
    assert last.sensors == ("cam1",)
    assert "cam2" in last.stale_sensors
    assert last.density == pytest.approx(1.0)  # cam1 alone once cam2's readings left


@pytest.mark.kernels
def test_line_counts_re_anchor_on_cameras(group: bool) -> None:
    """
    time (s)   0    1    2    3    4    5
    line        +10  +5-2      +5           running occupancy 10, 13, (anchor 50), 55
    cam1                  50                the camera sees 50 people: occupancy re-anchors
    """
    s = Scenario(group=group).send(
        line("l1", 0.5, 10), line("l2", 1.5, 5, 2), cam("c", 2.5, 50), line("l3", 3.5, 5),
        cam("tick", 9.5, 0, "cam2"))
    rows = {end: (u.density, u.source) for u in s.updates
            for end in [u.window_end_ms / 1000]}
    assert rows[1.0] == (pytest.approx(0.10), "line_count")
    assert rows[2.0] == (pytest.approx(0.13), "line_count")
    assert rows[3.0] == (pytest.approx(0.50), "occupancy")  # a camera in the window wins
    assert rows[6.0] == (pytest.approx(0.55), "line_count")  # anchored 50 + 5 entries


@pytest.mark.kernels
def test_registry_change_mid_stream_applies_to_later_windows(group: bool) -> None:
    """
    time (s)   0    1    2    3    4
    cam1         a    b    c    d
    closes            ^0   ^         c closes [0, 1); d (after the change) closes [1, 2)
    registry             ^ area 100 -> 200 m² (occupancy = density x area)
    """
    s = Scenario(group=group).send(cam("a", 0.5, 100), cam("b", 1.5, 100), cam("c", 2.5, 100))
    s.engine.set_zones([replace(ZONE, area_m2=200.0)])
    s.send(cam("d", 3.5, 100))
    occ = {u.window_end_ms / 1000: u.occupancy for u in s.updates}
    assert occ == {1.0: pytest.approx(100.0), 2.0: pytest.approx(200.0)}


@pytest.mark.kernels
def test_evidence_is_the_same_in_a_large_registry() -> None:
    # With many zones and few closed windows the engine reads only the closed zones' sensor
    # times (the other branch reads all of them): both must list the same evidence.
    others = [replace(ZONE, zone_id=f"o{i}", sensors=tuple(
        replace(s, sensor_id=f"{s.sensor_id}-o{i}") for s in ZONE.sensors)) for i in range(300)]
    small = WindowedDensityEngine([ZONE], window_ms=3000, slide_ms=1000, grace_ms=1000)
    large = WindowedDensityEngine([ZONE, *others], window_ms=3000, slide_ms=1000,
                                  grace_ms=1000)
    events = [cam("a", 0.5, 50), line("b", 0.7, 3), cam("c", 1.5, 60, "cam2"),
              cam("d", 4.5, 40), cam("e", 9.5, 40)]
    got = []
    for engine in (small, large):
        engine.ingest(events)
        got.append([(u.window_end_ms, u.sensors, u.stale_sensors, u.sensor_age_ms)
                    for u in engine.emit()])
    assert got[0] == got[1]
    assert got[0]  # windows closed
    assert any(u[1] and u[2] for u in got[0])  # some window has both seen and stale sensors
