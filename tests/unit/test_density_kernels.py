"""The numba kernels against their pure-Python twin and an independent reference.

Run twice by scripts/test: with the JIT (numba-compiled) and with NUMBA_DISABLE_JIT=1 (the
kernel source runs as Python, with numpy's bounds checks).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import Grid, Kind, SensorEvent, SensorSpec, Zone
from streams import kernels as K
from streams.density import WindowedDensityEngine, content_hashes, event_hash
from streams.grid import grid_total
from streams.kernels_py import SensorState, TwinEngine, ZoneState

SLIDE = 5_000
WINDOW = 60_000
GRACE = 10_000
T0 = 1_771_150_000_000 - 1_771_150_000_000 % SLIDE


def zone(zid: str, area: float = 400.0, sensors: tuple[SensorSpec, ...] = ()) -> Zone:
    return Zone(zid, zid, zid, area, "standing", sensors)


ZONES = [
    zone("a", 400.0, (SensorSpec("a-cam1", Kind.OCCUPANCY, coverage_m2=100.0),
                      SensorSpec("a-cam2", Kind.OCCUPANCY, coverage_m2=50.0),
                      SensorSpec("a-line", Kind.LINE_COUNT),  # no width: outflow only
                      SensorSpec("a-wifi", Kind.DEVICE_COUNT, calibration=2.0))),
    zone("b", 1000.0, (SensorSpec("b-line1", Kind.LINE_COUNT, width_m=4.0),
                       SensorSpec("b-line2", Kind.LINE_COUNT, width_m=2.5))),
    zone("c", 250.0, (SensorSpec("c-wifi1", Kind.DEVICE_COUNT, calibration=2.5),
                      SensorSpec("c-wifi2", Kind.DEVICE_COUNT, calibration=1.5))),
]
SENSORS = [(z.zone_id, s) for z in ZONES for s in z.sensors]


LEAD = 30_000
FAST = {"a-cam2": 20_000, "b-line2": 90_000}  # sensors whose clocks run ahead of arrival


def random_stream(
    rng: random.Random, n: int, *, partitions: int = 1
) -> list[tuple[SensorEvent, int, int]]:
    """Readings with jitter, out-of-order delivery, duplicates, ids reused with other content,
    late events, quiet gaps, and two sensors whose clocks run fast: (event, partition,
    arrival)."""
    out: list[tuple[SensorEvent, int, int]] = []
    clock = T0
    for i in range(n):
        clock += rng.choice([0, 200, 700, 1500, 3000]) + (120_000 if rng.random() < 0.01 else 0)
        zid, spec = rng.choice(SENSORS)
        ts = clock - rng.choice([0, 0, 0, 500, 4000, 9000, 15000, 40000])  # some late
        ts += FAST.get(spec.sensor_id, 0)
        kw: dict[str, int | float | None] = {}
        if spec.kind is Kind.OCCUPANCY:
            kw = {"count": rng.randint(0, 800)}
            if rng.random() < 0.3:
                kw["coverage_m2"] = rng.choice([80.0, 120.0])
        elif spec.kind is Kind.LINE_COUNT:
            kw = {"entries": rng.randint(0, 40), "exits": rng.randint(0, 45)}
        elif spec.kind is Kind.GRID_COUNT:
            kw = {"cells": ((0, rng.randrange(2), rng.randint(0, 300)),)}  # type: ignore[dict-item]
        else:
            kw = {"devices": rng.randint(0, 300)}
        ev = SensorEvent(f"{spec.sensor_id}-{i}", spec.sensor_id, zid, spec.kind, ts, **kw)  # type: ignore[arg-type]
        part = (ord(zid) % partitions)
        arrival = clock + rng.choice([0, 100, 800])
        out.append((ev, part, arrival))
        if rng.random() < 0.05:  # a gateway re-sends it
            out.append((ev, part, arrival + 500))
        if rng.random() < 0.03:  # the id is reused with other content: refused, first stands
            out.append((replace(ev, ts_ms=ev.ts_ms + 1), part, arrival + 700))
    return out


def run_engine(
    stream: list[tuple[SensorEvent, int, int]], batch: int, *, group: bool = False
) -> tuple[list[tuple], list[str], list[str]]:
    eng = WindowedDensityEngine(ZONES, window_ms=WINDOW, slide_ms=SLIDE, grace_ms=GRACE,
                                lead_ms=LEAD, out_rows=64,  # a small buffer: the resume path
                                group_by_zone=group)
    rows: list[tuple] = []
    late: list[str] = []
    conflicts: list[str] = []
    for i in range(0, len(stream), batch):
        chunk = stream[i:i + batch]
        refused = eng.ingest([e for e, _, _ in chunk], [p for _, p, _ in chunk],
                             arrivals=[a for _, _, a in chunk])
        late += [chunk[j][0].event_id for j, why in refused if why.reason.value == "late"]
        conflicts += [chunk[j][0].event_id for j, why in refused
                      if why.reason.value == "id_conflict"]
        oi, of = eng.emit_arrays()
        rows += [(u.zone_id, u.window_end_ms, u.source, u.freshness_ms, u.readings,
                  u.occupancy, u.density, u.trend_per_min, u.flow_per_min, agree,
                  u.outflow_per_min, u.outflow_per_m_s, u.counterflow_per_m_min,
                  u.counterflow_balance)
                 for u, agree in zip(eng._updates(oi, of), of[:, K.OF_AGREE].tolist(),
                                     strict=True)]
    return rows, late, conflicts


def run_twin(
    stream: list[tuple[SensorEvent, int, int]]
) -> tuple[list[tuple], list[str], list[str]]:
    twin = TwinEngine(GRACE)
    ids = {z.zone_id: i for i, z in enumerate(ZONES)}
    sidx: dict[str, int] = {}
    for z in ZONES:
        ndev = max(1, sum(s.kind is Kind.DEVICE_COUNT for s in z.sensors))
        twin.zones[ids[z.zone_id]] = ZoneState(z.area_m2, SLIDE, WINDOW // SLIDE, ndev)
        for s in z.sensors:
            sidx[s.sensor_id] = len(sidx)
            twin.sensors[sidx[s.sensor_id]] = SensorState(
                s.calibration or 1.0, s.coverage_m2 or math.nan, 16,
                {Kind.OCCUPANCY: K.OCC, Kind.DEVICE_COUNT: K.DEV,
                 Kind.LINE_COUNT: K.LINE}.get(s.kind), s.width_m or math.nan)
    rows = []
    evs = []
    for e, p, arrival in stream:
        a = e.count if e.kind is Kind.OCCUPANCY else (
            e.entries if e.kind is Kind.LINE_COUNT else e.devices if e.kind is Kind.DEVICE_COUNT
            else grid_total(e))
        ch = int(content_hashes(np.array([e.ts_ms]), np.array([int(e.kind)], dtype=np.int8),
                                np.array([float(a)]), np.array([float(e.exits)]),
                                np.array([e.coverage_m2 or math.nan]))[0])
        evs.append((ids[e.zone_id], sidx[e.sensor_id], int(e.kind),
                    min(e.ts_ms, arrival + LEAD), float(a), float(e.exits),
                    e.coverage_m2 or math.nan, event_hash(e.event_id), p,
                    min(e.ts_ms, arrival), ch))
    out: list = []
    statuses = twin.ingest(evs, out)
    twin.close_all(out)
    names = {v: k for k, v in ids.items()}
    kinds = {0: "line_count", 1: "occupancy", 2: "device_count", -1: None}
    for r in out:
        rows.append((names[r[0]], r[1], kinds[r[2]], *r[3:]))
    late = [e.event_id for (e, _, _), s in zip(stream, statuses, strict=True) if s == K.LATE]
    conflicts = [e.event_id for (e, _, _), s in zip(stream, statuses, strict=True)
                 if s == K.CONFLICT]
    return rows, late, conflicts


def same_rows(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x[:5] == y[:5]
        for u, v in zip(x[5:], y[5:], strict=True):
            assert (math.isnan(u) and math.isnan(v)) or u == pytest.approx(v, rel=1e-12, abs=1e-9)


@pytest.mark.kernels
@pytest.mark.parametrize("group", [False, True], ids=["arrival-order", "zone-order"])
@pytest.mark.parametrize("seed", range(6))
def test_kernel_matches_python_twin(seed: int, group: bool) -> None:
    stream = random_stream(random.Random(seed), 1500, partitions=1 + seed % 3)
    # The twin sees the whole stream as one batch; the engine in batches of 37. Any batching
    # gives the same windows: closes are driven by the watermark, not by batch boundaries.
    rows, late, conflicts = run_engine(stream, 37, group=group)
    twin_rows, twin_late, twin_conflicts = run_twin(stream)
    def by_zone_and_time(r: tuple) -> tuple:
        return r[0], r[1]

    same_rows(sorted(rows, key=by_zone_and_time), sorted(twin_rows, key=by_zone_and_time))
    assert sorted(late) == sorted(twin_late)
    assert sorted(conflicts) == sorted(twin_conflicts)
    assert late, "the stream should contain late events"
    assert conflicts, "the stream should contain ids reused with other content"


GRID_ZONE = replace(zone("d", 500.0, (SensorSpec("d-cam", Kind.OCCUPANCY, coverage_m2=100.0),
                                      SensorSpec("d-grid", Kind.GRID_COUNT))),
                   grid=Grid(20.0, (16.0, 100.0), 1, 2))


@pytest.mark.kernels
@pytest.mark.parametrize("seed", range(3))
def test_kernel_matches_python_twin_with_grid_readings(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The grid kind's code (kernels.GRID) in the stream: both move the clocks with it,
    judge it late, repeated or conflicting alike, and count it in no window."""
    zones = [*ZONES, GRID_ZONE]
    monkeypatch.setitem(globals(), "ZONES", zones)
    monkeypatch.setitem(globals(), "SENSORS", [(z.zone_id, s) for z in zones for s in z.sensors])
    stream = random_stream(random.Random(100 + seed), 1500, partitions=1 + seed % 3)
    grid_ids = {e.event_id for e, _, _ in stream if e.kind is Kind.GRID_COUNT}
    assert len(grid_ids) > 100
    rows, late, conflicts = run_engine(stream, 37)
    twin_rows, twin_late, twin_conflicts = run_twin(stream)

    def by_zone_and_time(r: tuple) -> tuple:
        return r[0], r[1]

    same_rows(sorted(rows, key=by_zone_and_time), sorted(twin_rows, key=by_zone_and_time))
    assert sorted(late) == sorted(twin_late)
    assert sorted(conflicts) == sorted(twin_conflicts)
    assert grid_ids & set(late), "some grid readings should be late"
    assert grid_ids & set(conflicts), "some grid ids should be reused with other content"
    # Zone d's windows count its camera only.
    assert max(r[4] for r in rows if r[0] == "d") > 0


@dataclass
class Accepted:
    ev: SensorEvent
    part: int


def reference_windows(stream: list[tuple[SensorEvent, int, int]]) -> tuple[dict, set[str]]:
    """Independent reference: replay watermarks (event time, never later than arrival) to
    find the accepted events, each at its placement time (never later than arrival + lead),
    then compute each window's camera density and flow from explicit bounds."""
    p_max: dict[int, int] = {}
    closed: dict[str, int] = {}
    seen: dict[str, list[str]] = {}
    accepted: list[SensorEvent] = []
    late: set[str] = set()
    for ev, p, arrival in stream:
        eff = min(ev.ts_ms, arrival)
        p_max[p] = max(p_max.get(p, eff), eff)
        wm = p_max[p] - GRACE
        closed[ev.zone_id] = max(closed.get(ev.zone_id, wm // SLIDE - 1), wm // SLIDE - 1)
        recent = seen.setdefault(ev.sensor_id, [])
        if ev.event_id in recent:
            continue
        placed = replace(ev, ts_ms=min(ev.ts_ms, arrival + LEAD))
        if placed.ts_ms // SLIDE <= closed[ev.zone_id]:
            late.add(ev.event_id)
            continue
        recent.append(ev.event_id)
        del recent[:-16]
        accepted.append(placed)
    accepted.sort(key=lambda e: e.ts_ms)
    return {"events": accepted}, late


def reference_fusion(inside: list[SensorEvent], zone: Zone) -> tuple[float, float] | None:
    """Independent reference of fusion per sensor over the accepted readings of one window:
    (density, agreement) of its cameras, else (when no line counter reported) of its device
    counters; None when line counters decide. Written from the definition in the README,
    with numpy's weighted averages, not from the kernel."""
    spec = {s.sensor_id: s for s in zone.sensors}
    by_sensor: dict[str, list[SensorEvent]] = {}
    cams = [e for e in inside if e.kind is Kind.OCCUPANCY]
    lines = [e for e in inside if e.kind is Kind.LINE_COUNT]
    devs = [e for e in inside if e.kind is Kind.DEVICE_COUNT]
    if cams:
        for e in cams:
            by_sensor.setdefault(e.sensor_id, []).append(e)
        covs = {sid: np.array([e.coverage_m2 or spec[sid].coverage_m2 or zone.area_m2
                               for e in evs]) for sid, evs in by_sensor.items()}
        value = np.array([sum(e.count for e in evs) / covs[sid].sum()
                          for sid, evs in by_sensor.items()])
        weight = np.array([covs[sid].mean() for sid in by_sensor])
    elif lines:
        return None
    else:
        for e in devs:
            by_sensor.setdefault(e.sensor_id, []).append(e)
        ndev = sum(s.kind is Kind.DEVICE_COUNT for s in zone.sensors)
        value = np.array([np.mean([e.devices * (spec[sid].calibration or 1.0) for e in evs])
                          * ndev / zone.area_m2 for sid, evs in by_sensor.items()])
        weight = np.ones(len(value))
    dens = float(np.average(value, weights=weight))
    sigma = float(np.sqrt(np.average((value - dens) ** 2, weights=weight)))
    return dens, 1.0 / (1.0 + sigma / max(dens, 1.0))


@pytest.mark.kernels
def test_windows_match_independent_reference() -> None:
    rng = random.Random(42)
    stream = random_stream(rng, 3000)
    rows, late, _ = run_engine(stream, 101)
    ref, ref_late = reference_windows(stream)
    assert set(late) == ref_late
    zones = {z.zone_id: z for z in ZONES}
    checked: dict[str | None, int] = {}
    disagree = 0
    flows_checked = 0
    for (zid, end, src, _fresh, n, _occ, dens, _trend, flow, agree, out, out_pms, xflow,
         xbal) in rows:
        start = end - WINDOW
        inside = [e for e in ref["events"] if e.zone_id == zid and start <= e.ts_ms < end]
        assert n == len(inside)
        entries = sum(e.entries for e in inside if e.kind is Kind.LINE_COUNT)
        assert flow == pytest.approx(entries / (WINDOW / 60_000), rel=1e-9)
        expect_flows = reference_line_flows(inside, zones[zid])
        for got, want in zip((out, out_pms, xflow, xbal), expect_flows, strict=True):
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-9)
        flows_checked += not math.isnan(xflow)
        expect = reference_fusion(inside, zones[zid]) if inside else None
        if expect is not None:
            assert src in ("occupancy", "device_count")
            assert dens == pytest.approx(expect[0], rel=1e-9)
            assert agree == pytest.approx(expect[1], rel=1e-9)
            checked[src] = checked.get(src, 0) + 1
            disagree += agree < 0.99
        elif inside:
            assert src == "line_count"
            assert agree == 1.0
        else:
            assert math.isnan(dens)
            assert math.isnan(agree)
    assert checked.get("occupancy", 0) > 50
    assert checked.get("device_count", 0) > 50
    assert disagree > 50, "the stream should make sensors disagree"
    assert flows_checked > 50, "the stream should give counter-flow windows"


def reference_line_flows(inside: list[SensorEvent], zone: Zone
                         ) -> tuple[float, float, float, float]:
    """Independent reference of a window's outflow, specific outflow and counter-flow, from
    the accepted line readings inside it (written from the README's definitions)."""
    minutes = WINDOW / 60_000
    width = {s.sensor_id: s.width_m for s in zone.sensors}
    lines = [e for e in inside if e.kind is Kind.LINE_COUNT]
    out = sum(e.exits for e in lines) / minutes
    sids = sorted({e.sensor_id for e in lines if width.get(e.sensor_id)})
    if not sids:
        return out, math.nan, math.nan, math.nan
    per = {sid: (sum(e.entries for e in lines if e.sensor_id == sid),
                 sum(e.exits for e in lines if e.sensor_id == sid)) for sid in sids}
    total_w = sum(width[sid] or 0.0 for sid in sids)
    pms = sum(x for _, x in per.values()) / total_w / (minutes * 60)
    xf = {sid: min(per[sid]) / (width[sid] or 1.0) / minutes for sid in sids}
    top = max(sids, key=lambda sid: xf[sid])
    hi = max(per[top])
    return out, pms, xf[top], (min(per[top]) / hi if hi else 0.0)


@pytest.mark.kernels
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 400_000), st.integers(0, 500), st.booleans()),
                min_size=1, max_size=120),
       st.integers(1, 50))
def test_property_camera_windows_equal_reference(
    readings: list[tuple[int, int, bool]], batch: int
) -> None:
    """Random camera readings in random order: every emitted window equals the per-sensor
    fusion of the accepted readings inside its explicit bounds."""
    stream = [(SensorEvent(f"h{i}", "a-cam1" if cam1 else "a-cam2", "a", Kind.OCCUPANCY,
                           T0 + ts, count=c), 0, T0 + ts)
              for i, (ts, c, cam1) in enumerate(readings)]
    rows, late, _ = run_engine(stream, batch)
    ref, ref_late = reference_windows(stream)
    assert set(late) == ref_late
    for _zid, end, _src, _f, n, _o, dens, _t, _fl, agree, *_flows in rows:
        inside = [e for e in ref["events"] if end - WINDOW <= e.ts_ms < end]
        assert n == len(inside)
        if inside:
            expect = reference_fusion(inside, ZONES[0])
            assert expect is not None
            assert dens == pytest.approx(expect[0], rel=1e-9)
            assert agree == pytest.approx(expect[1], rel=1e-9)


def test_ring_is_sized_for_window_and_grace() -> None:
    eng = WindowedDensityEngine(ZONES)
    assert eng.ring_slots == 60 // 5 + 10 // 5 + 30 // 5 + 3
    per_zone = eng.ring_slots * K.R_FIELDS * 8 + (K.ZF_N + K.ZI_N) * 8
    assert per_zone == 2184  # the figure documented in streams/density.py
    assert np.isnan(eng.ring[0, :, K.R_DENS]).all()
