"""Fusion per sensor (issue 15, item 4): a sensor's weight is its coverage, not how often it
reports; confidence drops with stale and with disagreeing sensors; the per-sensor state
survives a snapshot, and a snapshot of the earlier layout still restores."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from schemas import Kind, SensorEvent, SensorSpec, Zone
from streams import kernels as K
from streams.density import WindowedDensityEngine
from streams.engine import DensityUpdate
from streams.records import density_record

T0 = 1_771_150_000_000 - 1_771_150_000_000 % 60_000


def zone(*sensors: SensorSpec, area: float = 1100.0) -> Zone:
    return Zone("z", "z", "z", area, "standing", sensors)


CAMS = zone(SensorSpec("cam-a", Kind.OCCUPANCY, coverage_m2=100.0),
            SensorSpec("cam-b", Kind.OCCUPANCY, coverage_m2=1000.0))


def cam(sensor: str, t_ms: int, count: int, n: int) -> SensorEvent:
    return SensorEvent(f"{sensor}-{n}", sensor, "z", Kind.OCCUPANCY, T0 + t_ms, count=count)


def wifi(sensor: str, t_ms: int, devices: int, n: int) -> SensorEvent:
    return SensorEvent(f"{sensor}-{n}", sensor, "z", Kind.DEVICE_COUNT, T0 + t_ms,
                       devices=devices)


def run(z: Zone, events: list[SensorEvent], until_ms: int = 130_000) -> list[DensityUpdate]:
    """The events in time order, then a reading-free clock up to ``until_ms``."""
    eng = WindowedDensityEngine([z])
    out: list[DensityUpdate] = []
    for ev in sorted(events, key=lambda e: e.ts_ms):
        assert eng.ingest([ev], [0]) == []
        out += eng.emit()
    eng.p_max[0] = max(int(eng.p_max[0]), T0 + until_ms)
    return out + eng.emit()


def at(updates: list[DensityUpdate], end_s: int) -> DensityUpdate:
    [u] = [u for u in updates if u.window_end_ms == T0 + end_s * 1000]
    return u


def issue_example(seconds: int = 120) -> list[SensorEvent]:
    """Camera A: 5 p/m² over 100 m², 60 readings a minute; camera B: 1 p/m² over 1,000 m²,
    6 a minute."""
    evs = [cam("cam-a", t * 1000, 500, t) for t in range(seconds)]
    evs += [cam("cam-b", t * 1000 + 300, 1000, t) for t in range(0, seconds, 10)]
    return evs


@pytest.mark.kernels
def test_issue_example_weighs_sensors_by_coverage_not_by_rate() -> None:
    """The issue's example: per reading the zone got 3.0 p/m²; per sensor it is 1.36."""
    u = at(run(CAMS, issue_example()), 90)
    assert u.source == "occupancy"
    assert u.readings == 66
    assert u.density == pytest.approx((5 * 100 + 1 * 1000) / 1100)  # 1.3636...
    assert round(u.density, 2) == 1.36
    assert u.occupancy == pytest.approx(1500.0)


@pytest.mark.kernels
def test_bucket_densities_are_fused_per_sensor_too() -> None:
    """The trend is the slope of the per-bucket densities: steady sensors, no trend (with
    per-reading sums a bucket holding camera B's reading reads lower than one without)."""
    u = at(run(CAMS, issue_example()), 90)
    assert u.trend_per_min == pytest.approx(0.0, abs=0.05)


@pytest.mark.kernels
def test_device_counters_are_averaged_per_sensor() -> None:
    """Two Wi-Fi counters, one reporting 10 times as often: each one's mean first."""
    z = zone(SensorSpec("wifi-1", Kind.DEVICE_COUNT, calibration=2.0),
             SensorSpec("wifi-2", Kind.DEVICE_COUNT, calibration=1.0), area=100.0)
    evs = [wifi("wifi-1", t * 1000, 50, t) for t in range(120)]  # 100 persons each time
    evs += [wifi("wifi-2", t * 1000 + 300, 300, t) for t in range(0, 120, 10)]  # 300
    u = at(run(z, evs), 90)
    assert u.source == "device_count"
    # mean over sensors (100 + 300) / 2 x 2 device sensors / 100 m² (per reading: 2.36)
    assert u.density == pytest.approx(4.0)


@pytest.mark.kernels
def test_confidence_is_one_for_fresh_agreeing_sensors() -> None:
    evs = [cam(s, t * 1000 + k * 100, 200 if s == "cam-a" else 2000, t)
           for t in range(120) for k, s in enumerate(("cam-a", "cam-b"))]
    u = at(run(CAMS, evs), 90)
    assert u.density == pytest.approx(2.0)
    assert u.confidence == pytest.approx(1.0)


@pytest.mark.kernels
def test_confidence_drops_when_sensors_disagree() -> None:
    """Equal coverage, 2 and 4 p/m²: D = 3, sigma = 1, agreement 1 / (1 + 1/3) = 0.75."""
    z = zone(SensorSpec("cam-a", Kind.OCCUPANCY, coverage_m2=100.0),
             SensorSpec("cam-b", Kind.OCCUPANCY, coverage_m2=100.0), area=200.0)
    evs = [cam(s, t * 1000 + k * 100, 200 if s == "cam-a" else 400, t)
           for t in range(0, 120, 2) for k, s in enumerate(("cam-a", "cam-b"))]
    u = at(run(z, evs), 90)
    assert u.density == pytest.approx(3.0)
    assert u.confidence == pytest.approx(0.75)
    # Below 1 p/m² the spread is measured against 1 p/m²: 0.1 and 0.3 give 1 / (1 + 0.1).
    low = [cam(s, t * 1000 + k * 100, 10 if s == "cam-a" else 30, t)
           for t in range(0, 120, 2) for k, s in enumerate(("cam-a", "cam-b"))]
    assert at(run(z, low), 90).confidence == pytest.approx(1 / 1.1)


@pytest.mark.kernels
def test_confidence_drops_when_a_sensor_goes_stale() -> None:
    """Camera B stops at 60 s. Window [40 s, 100 s): its newest reading (59.1 s) is 40.9 s old;
    beyond the 10 s tolerance that is 30.9 s of the 50 s left: stale share 0.618, mean over
    the two cameras 0.309, confidence 0.691. Once it has no reading in the window: 0.5."""
    evs = [cam(s, t * 1000 + k * 100, 200 if s == "cam-a" else 2000, t)
           for t in range(120) for k, s in enumerate(("cam-a", "cam-b")) if s == "cam-a" or t < 60]
    ups = run(CAMS, evs)
    assert at(ups, 60).confidence == pytest.approx(1.0)
    assert at(ups, 65).confidence == pytest.approx(1.0)  # 5.9 s old: within 2 slides
    assert at(ups, 100).confidence == pytest.approx(1 - (40.9 - 10) / 50 / 2)
    late = at(ups, 120)
    assert late.stale_sensors == ("cam-b",)
    assert late.confidence == pytest.approx(0.5)
    assert late.density == pytest.approx(2.0)  # camera A alone


@pytest.mark.kernels
def test_line_counters_keep_their_running_occupancy() -> None:
    """Line counters are additive (gates), not estimates to average: as before."""
    z = zone(SensorSpec("gate-1", Kind.LINE_COUNT), SensorSpec("gate-2", Kind.LINE_COUNT),
             area=100.0)
    evs = [SensorEvent(f"g{g}-{t}", f"gate-{g}", "z", Kind.LINE_COUNT, T0 + t * 1000 + g,
                       entries=1, exits=0) for t in range(120) for g in (1, 2)
           if g == 1 or t % 10 == 0]
    u = at(run(z, evs), 60)
    assert u.source == "line_count"
    assert u.occupancy == pytest.approx(60 + 6)
    assert u.confidence == pytest.approx(1.0)


@pytest.mark.kernels
def test_blind_window_has_no_confidence() -> None:
    ups = run(CAMS, [cam("cam-a", 1000, 100, 0)], until_ms=200_000)
    assert math.isnan(ups[-1].density)
    assert math.isnan(ups[-1].confidence)


# -- snapshots ----------------------------------------------------------------------------

def _continue(eng: WindowedDensityEngine, evs: list[SensorEvent]) -> list[DensityUpdate]:
    out: list[DensityUpdate] = []
    for ev in evs:
        assert eng.ingest([ev], [0]) == []
        out += eng.emit()
    return out


def _split() -> tuple[list[SensorEvent], list[SensorEvent]]:
    evs = sorted(issue_example(240), key=lambda e: e.ts_ms)
    cut = next(i for i, e in enumerate(evs) if e.ts_ms >= T0 + 100_000)
    return evs[:cut], evs[cut:]


def _same(a: list[DensityUpdate], b: list[DensityUpdate]) -> None:
    assert len(a) == len(b) > 10
    for x, y in zip(a, b, strict=True):
        assert x.window_end_ms == y.window_end_ms
        assert x.density == pytest.approx(y.density, rel=1e-12)
        assert x.confidence == pytest.approx(y.confidence, rel=1e-12)


@pytest.mark.kernels
def test_per_sensor_state_round_trips_a_snapshot() -> None:
    before, after = _split()
    whole = WindowedDensityEngine([CAMS])
    _continue(whole, before)
    expect = _continue(whole, after)
    first = WindowedDensityEngine([CAMS])
    _continue(first, before)
    snap = first.snapshot(0)
    assert {"x_kind", "xr", "xs"} <= set(snap)
    second = WindowedDensityEngine([CAMS])
    assert second.restore(snap) == 1
    got = _continue(second, after)
    _same(got, expect)
    assert round(got[0].density, 2) == 1.36  # the first window after the restore, too


def old_layout(snap: dict[str, npt.NDArray[np.generic]]) -> dict[str, npt.NDArray[np.generic]]:
    """What the code before fusion per sensor wrote: no per-sensor rows, 4 sensor int fields."""
    old = {k: v for k, v in snap.items() if k not in ("x_kind", "xr", "xs")}
    old["si"] = snap["si"][:, :4]
    return old


@pytest.mark.kernels
def test_snapshot_of_the_earlier_layout_restores() -> None:
    """The windows that hold restored buckets (no per-sensor sums) use the zone sums, as the
    code that wrote the snapshot did; from one window on, fusion is per sensor."""
    before, after = _split()
    whole = WindowedDensityEngine([CAMS])
    _continue(whole, before)
    expect = _continue(whole, after)
    first = WindowedDensityEngine([CAMS])
    _continue(first, before)
    second = WindowedDensityEngine([CAMS])
    assert second.restore(old_layout(first.snapshot(0))) == 1
    got = _continue(second, after)
    assert len(got) == len(expect)
    restored_until = T0 + 100_000 + 60_000  # windows ending later hold no restored bucket
    mixed = [u for u in got if u.window_end_ms <= restored_until - 5_000]
    assert mixed
    assert all(u.density > 1.5 for u in mixed)
    assert all(u.confidence == pytest.approx(1.0) for u in mixed)
    _same([u for u in got if u.window_end_ms >= restored_until],
          [u for u in expect if u.window_end_ms >= restored_until])


@pytest.mark.kernels
def test_a_sensor_sending_another_kind_falls_back_to_zone_sums() -> None:
    """A camera that also sends device counts: its device readings are counted by the zone
    sums only; windows with them use the zone's per-reading formula (never crash)."""
    z = zone(SensorSpec("cam-a", Kind.OCCUPANCY, coverage_m2=100.0), area=100.0)
    evs = [wifi("cam-a", t * 1000, 50, t) for t in range(120)]
    u = at(run(z, evs), 90)
    assert u.source == "device_count"
    assert u.density == pytest.approx(0.5)


def test_engine_state_includes_the_rows() -> None:
    eng = WindowedDensityEngine([CAMS])
    assert eng.n_rows == 2
    assert eng.xr.shape[1:] == (eng.ring_slots, K.X_FIELDS)


@pytest.mark.kernels
def test_snapshot_written_before_fusion_per_sensor_restores() -> None:
    """``data/density-snapshot-102a1e1.npz`` is what the engine before this change (commit
    102a1e1) wrote after ``_split()[0]``: it restores, its windows continue on the zone
    sums, and from one window after the snapshot on, fusion is per sensor."""
    path = Path(__file__).parent / "data" / "density-snapshot-102a1e1.npz"
    with np.load(path, allow_pickle=False) as f:
        snap = {k: f[k] for k in f.files}
    assert "xr" not in snap
    assert snap["si"].shape[1] == 4
    _, after = _split()
    eng = WindowedDensityEngine([CAMS])
    assert eng.restore(snap) == 1
    got = _continue(eng, after)
    assert got[0].window_end_ms == T0 + 90_000
    assert got[0].density == pytest.approx(3.0)  # per reading, as that version said
    fused = [u for u in got if u.window_end_ms >= T0 + 160_000]
    assert fused
    assert all(u.density == pytest.approx(1500 / 1100) for u in fused)


@pytest.mark.kernels
def test_density_record_carries_confidence() -> None:
    """The density topic's record gains ``confidence`` (3 decimals; null when blind)."""
    ups = run(CAMS, issue_example(), until_ms=300_000)
    rec = orjson.loads(density_record(at(ups, 90)))
    assert rec["confidence"] == round(at(ups, 90).confidence, 3)
    assert 0.0 < rec["confidence"] < 1.0  # cameras A (5 p/m²) and B (1 p/m²) disagree
    assert orjson.loads(density_record(ups[-1]))["confidence"] is None
