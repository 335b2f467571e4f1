"""Grid densities (issue 16, hot spots): the grid_count contract, the registry's grid, cell
areas, the numba grid kernels against their Python twins and an independent reference on
random input, and the density engine with grid readings present."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import jsonschema
import numpy as np
import orjson
import pytest

from schemas import (
    Kind,
    Reason,
    SensorEvent,
    SensorSpec,
    Zone,
    ZoneRegistryError,
    decode_sensor_message,
    load_zones,
    parse_zone,
    schema_file,
)
from streams import WindowedDensityEngine
from streams import grid_kernels as GK
from streams import kernels_py as KP
from streams.grid import GridStore, cell_areas, polygon_area_m2
from streams.pipeline import Pipeline
from streams.records import SourceMessage

ZONE_DOC = {"zone_id": "g", "name": {"th": "ก", "en": "G"}, "area_m2": 10000,
            "crowd": "moving", "grid": {"cell_m": 50, "origin": [16.0, 100.0], "rows": 2,
                                        "cols": 2},
            "sensors": [{"sensor_id": "cam", "kind": "occupancy"},
                        {"sensor_id": "grid", "kind": "grid_count"}]}


def grid_ev(eid: str, ts: int, cells: list[tuple[int, int, int]] = (),  # type: ignore[assignment]
            points: list[tuple[float, float]] = (),  # type: ignore[assignment]
            zone: str = "g") -> SensorEvent:
    return SensorEvent(eid, "grid", zone, Kind.GRID_COUNT, ts, cells=tuple(cells),
                       points=tuple(points))


# -- contract ------------------------------------------------------------------------------
def test_grid_count_decodes_cells_and_points() -> None:
    doc = {"event_id": "e", "sensor_id": "s", "zone_id": "z", "kind": "grid_count", "ts": 5,
           "cells": [{"row": 1, "col": 2, "count": 30}], "points": [[16.8, 100.26]]}
    (ev,), rej = decode_sensor_message(orjson.dumps(doc))
    assert rej == []
    assert ev.kind is Kind.GRID_COUNT
    assert ev.cells == ((1, 2, 30),)
    assert ev.points == ((16.8, 100.26),)


@pytest.mark.parametrize(("patch", "pointer"), [
    ({"cells": [{"row": 0, "col": 0, "count": 1}, {"row": -1, "col": 0, "count": 1}]},
     "/1/cells/1/row"),
    ({"cells": [{"row": 0, "count": 1}]}, "/1/cells/0"),
    ({"points": [[16.8, 100.2], [91, 0]]}, "/1/points/1/0"),
    ({"points": [[16.8]]}, "/1/points/0"),
    ({}, "/1"),  # grid_count needs cells or points
])
def test_bad_cells_and_points_are_schema_rejections_with_a_pointer(
        patch: dict[str, object], pointer: str) -> None:
    good = {"event_id": "a", "sensor_id": "s", "zone_id": "z", "kind": "occupancy", "ts": 1,
            "count": 3}
    bad = {"event_id": "b", "sensor_id": "s", "zone_id": "z", "kind": "grid_count", "ts": 1,
           **patch}
    events, (rej,) = decode_sensor_message(orjson.dumps([good, bad]))
    assert [e.event_id for e in events] == ["a"]
    assert rej.reason is Reason.SCHEMA
    assert rej.index == 1
    assert rej.pointer == pointer


# -- registry ------------------------------------------------------------------------------
def test_registry_grid_parses_and_old_registries_still_load() -> None:
    z = parse_zone(ZONE_DOC)
    assert z.grid is not None
    assert (z.grid.rows, z.grid.cols, z.grid.cell_m) == (2, 2, 50.0)
    assert z.grid.cell_id(3) == "r1c1"
    old = {k: v for k, v in ZONE_DOC.items() if k != "grid"}
    old["sensors"] = [{"sensor_id": "cam", "kind": "occupancy"}]
    assert parse_zone(old).grid is None


@pytest.mark.parametrize("grid", [
    {"cell_m": 50, "origin": [16.0, 100.0], "rows": 2},
    {"cell_m": 2, "origin": [16.0, 100.0], "rows": 2, "cols": 2},
    {"cell_m": 50, "origin": [91.0, 100.0], "rows": 2, "cols": 2},
    {"cell_m": 50, "origin": [16.0, 100.0], "rows": 0, "cols": 2},
    {"cell_m": 50, "origin": [16.0, 100.0], "rows": 2, "cols": True},
    {"cell_m": 50, "origin": [16.0, 100.0], "rows": 2, "cols": 2, "extra": 1},
])
def test_bad_grids_are_refused_by_both_the_parser_and_the_schema(grid: dict[str, object]
                                                                  ) -> None:
    doc = {**ZONE_DOC, "grid": grid}
    with pytest.raises(ZoneRegistryError, match="grid"):
        parse_zone(doc)
    schema = orjson.loads(schema_file("zone.v1.json").read_bytes())
    assert not jsonschema.Draft202012Validator(schema).is_valid(doc)


def test_the_real_registry_with_its_grid_is_valid_against_the_schema() -> None:
    import yaml  # noqa: PLC0415

    from benchmarks.detection import ZONES_FILE  # noqa: PLC0415

    schema = orjson.loads(schema_file("zone.v1.json").read_bytes())
    validator = jsonschema.Draft202012Validator(schema)
    raw = yaml.safe_load(ZONES_FILE.read_text(encoding="utf-8"))
    for doc in raw["zones"] if isinstance(raw, dict) else raw:
        validator.validate(doc)
    grounds = {z.zone_id: z for z in load_zones(ZONES_FILE)}["wat-yai-grounds"]
    assert grounds.grid is not None
    assert validator.is_valid({**ZONE_DOC, "grid": {"cell_m": 50, "origin": [16.0, 100.0],
                                                    "rows": 2, "cols": 2}})


# -- cell areas ----------------------------------------------------------------------------
def test_a_cell_is_clipped_to_a_small_zone_without_a_polygon() -> None:
    vihara = replace(parse_zone(ZONE_DOC), area_m2=600.0)
    assert cell_areas(vihara).tolist() == [600.0] * 4


def test_cells_are_clipped_to_the_polygon_and_scaled_to_the_usable_area() -> None:
    # A 75 m x 75 m square from the origin: cell r0c0 whole, r0c1 and r1c0 half, r1c1 a
    # quarter; 2 x 2 cells of 50 m; usable area half the polygon's.
    m_lat = 111_320.0
    m_lon = m_lat * math.cos(math.radians(16.0))
    lat, lon = 75 / m_lat, 75 / m_lon
    poly = ((16.0, 100.0), (16.0 + lat, 100.0), (16.0 + lat, 100.0 + lon), (16.0, 100.0 + lon))
    assert polygon_area_m2(poly) == pytest.approx(75 * 75, rel=1e-4)
    z = replace(parse_zone(ZONE_DOC), polygon=poly, area_m2=75 * 75 / 2)
    areas = cell_areas(z)
    assert areas.tolist() == pytest.approx([1250.0, 625.0, 625.0, 312.5], rel=0.02)
    # A cell less than a quarter inside is not judged.
    z2 = replace(z, polygon=tuple((a, b) for a, b in ((16.0, 100.0), (16.0 + lat * 0.6, 100.0),
                                                      (16.0 + lat * 0.6, 100.0 + lon * 0.6),
                                                      (16.0, 100.0 + lon * 0.6))))
    assert cell_areas(z2)[3] == 0.0
    assert cell_areas(z2)[0] > 0


def test_the_grounds_cells_add_up_to_their_usable_area() -> None:
    from benchmarks.detection import ZONES_FILE  # noqa: PLC0415

    z = {z.zone_id: z for z in load_zones(ZONES_FILE)}["wat-yai-grounds"]
    areas = cell_areas(z)
    assert areas.shape == (30,)
    assert areas.sum() == pytest.approx(z.area_m2, rel=0.05)
    assert areas.max() <= 2500.0


# -- kernels: numba vs twin vs an independent reference ------------------------------------
@pytest.mark.kernels
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_grid_kernels_match_their_twins(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    lat = rng.uniform(15.99, 16.01, 300)
    lon = rng.uniform(99.99, 100.01, 300)
    out = np.empty(300, dtype=np.int64)
    GK.bin_points(lat, lon, 16.0, 100.0, 111_320.0, 107_000.0, 50.0, rows, cols, out)
    twin = KP.bin_points(list(zip(lat.tolist(), lon.tolist(), strict=True)), 16.0, 100.0,
                         111_320.0, 107_000.0, 50.0, rows, cols)
    assert out.tolist() == twin
    assert (out >= 0).any()
    assert (out < 0).any()
    k = int(rng.integers(0, 13))
    sums = rng.uniform(0, 500, (k, rows * cols))
    reads = rng.integers(0, 3, k).astype(np.float64)
    areas = rng.choice([0.0, 600.0, 2500.0], rows * cols)
    dens = np.empty(rows * cols)
    best, best_d = GK.window_cells(sums, reads, areas, dens)
    t_dens, t_best, t_best_d = KP.window_cells(sums.tolist(), reads.tolist(), areas.tolist())
    assert best == t_best
    assert np.allclose(dens, t_dens, rtol=1e-12, equal_nan=True)
    assert (math.isnan(best_d) and math.isnan(t_best_d)) or best_d == pytest.approx(t_best_d)


def _reference(readings: list[tuple[int, list[tuple[int, int]]]], start: int, end: int,
               areas: list[float], slide: int) -> list[float]:
    """Per cell: the mean people per reading over the window's readings / area, from the raw
    readings (buckets start // slide .. end // slide - 1), nothing shared with the store."""
    inside = [cells for ts, cells in readings if start // slide <= ts // slide < end // slide]
    out = []
    for c, a in enumerate(areas):
        if a <= 0 or not inside:
            out.append(math.nan)
            continue
        total = sum(n for cells in inside for cell, n in cells if cell == c)
        out.append(total / len(inside) / a)
    return out


@pytest.mark.kernels
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_engine_grid_windows_match_a_reference_on_random_input(seed: int) -> None:
    rng = random.Random(seed)
    zone = parse_zone(ZONE_DOC)
    eng = WindowedDensityEngine([zone], window_ms=20_000, slide_ms=5000, grace_ms=2000)
    readings: list[tuple[int, list[tuple[int, int]]]] = []
    events: list[SensorEvent] = []
    t = 0
    for i in range(300):
        t += rng.randint(0, 2500)
        events.append(SensorEvent(f"c{i}", "cam", "g", Kind.OCCUPANCY, t, count=50))
        if rng.random() < 0.6:
            cells = [(rng.randrange(4), rng.randint(0, 900)) for _ in range(rng.randint(0, 5))]
            pts = [(16.0 + rng.uniform(-1e-4, 1e-3), 100.0 + rng.uniform(-1e-4, 1e-3))
                   for _ in range(rng.randint(0, 6))]
            ts = max(0, t - rng.randint(0, 1500))  # a little out of order, within the grace
            ev = grid_ev(f"g{i}", ts, [(c // 2, c % 2, n) for c, n in cells], pts)
            events.append(ev)
            binned = KP.bin_points(pts, 16.0, 100.0, 111_320.0,
                                   111_320.0 * math.cos(math.radians(16.0)), 50.0, 2, 2)
            readings.append((ts, cells + [(b, 1) for b in binned if b >= 0]))
    refused = []
    for j in range(0, len(events), 7):
        refused += eng.ingest(events[j:j + 7])
    assert refused == []
    eng.finish()
    ups = [u for u in eng.emit() if u.cells]
    assert len(ups) > 50
    areas = [2500.0] * 4
    judged = 0
    for u in ups:
        want = _reference(readings, u.window_start_ms, u.window_end_ms, areas, 5000)
        assert np.allclose(u.cells, want, rtol=1e-12, equal_nan=True), u.window_end_ms
        if not all(math.isnan(w) for w in want):
            judged += 1
            best = max(range(4), key=lambda c: (want[c], -c))
            assert u.hot_cell == f"r{best // 2}c{best % 2}"
            assert u.hot_density == pytest.approx(want[best])
    assert judged > 40


@pytest.mark.kernels
def test_grid_readings_leave_the_density_windows_unchanged() -> None:
    """The density kernels see the grid kind's code and count it in no sum: with grid
    readings at the same times as the cameras' (so the clocks move alike), every density
    field is what it is without them."""
    zone = parse_zone(ZONE_DOC)
    rng = random.Random(7)
    cams = [SensorEvent(f"c{i}", "cam", "g", Kind.OCCUPANCY, i * 1000 + rng.randint(0, 900),
                        count=rng.randint(0, 500)) for i in range(200)]
    grids = [grid_ev(f"g{i}", e.ts_ms, [(1, 1, rng.randint(0, 900))]) for i, e in
             enumerate(cams)]
    mixed = [x for pair in zip(cams, grids, strict=True) for x in pair]

    def run(events: list[SensorEvent]) -> list[tuple[object, ...]]:
        eng = WindowedDensityEngine([zone])
        for j in range(0, len(events), 10):
            assert eng.ingest(events[j:j + 10]) == []
        eng.finish()
        return [(u.window_end_ms, u.occupancy, u.density, u.trend_per_min, u.readings,
                 u.source, u.freshness_ms) for u in eng.emit()]

    without, with_grid = run(cams), run(mixed)
    assert len(without) > 40
    assert repr(with_grid) == repr(without)  # repr: NaN trends compare equal


@pytest.mark.kernels
def test_grid_readings_are_deduplicated_and_late_ones_refused() -> None:
    zone = parse_zone(ZONE_DOC)
    eng = WindowedDensityEngine([zone], window_ms=20_000, slide_ms=5000, grace_ms=2000)
    evs = [SensorEvent(f"c{i}", "cam", "g", Kind.OCCUPANCY, i * 1000, count=10)
           for i in range(60)]
    assert eng.ingest(evs) == []
    late = grid_ev("g-late", 1000, [(0, 0, 5)])
    dup1, dup2 = grid_ev("g1", 59_000, [(0, 0, 2500)]), grid_ev("g1", 59_000, [(0, 0, 2500)])
    refused = eng.ingest([late, dup1, dup2])
    assert [(i, r.reason) for i, r in refused] == [(0, Reason.LATE)]
    assert eng.duplicates == 1
    eng.finish()
    last = [u for u in eng.emit() if u.hot_cell is not None][-1]
    assert last.hot_cell == "r0c0"
    assert last.hot_density == pytest.approx(1.0)


@pytest.mark.kernels
def test_off_grid_readings_go_to_the_dead_letter_topic_with_a_pointer() -> None:
    zone = parse_zone(ZONE_DOC)
    plain = Zone("p", "พ", "P", 100.0, "standing", (SensorSpec("p-grid", Kind.GRID_COUNT),))
    pipe = Pipeline([zone, plain])
    batch = [
        {"event_id": "ok", "sensor_id": "grid", "zone_id": "g", "kind": "grid_count", "ts": 1,
         "cells": [{"row": 1, "col": 1, "count": 3}]},
        {"event_id": "off", "sensor_id": "grid", "zone_id": "g", "kind": "grid_count", "ts": 1,
         "cells": [{"row": 0, "col": 0, "count": 3}, {"row": 2, "col": 0, "count": 3}]},
        {"event_id": "nogrid", "sensor_id": "p-grid", "zone_id": "p", "kind": "grid_count",
         "ts": 1, "points": [[16.0, 100.0]]},
    ]
    out = pipe.process_sensor_batch([SourceMessage("sensors", 0, 0, 1, b"g",
                                                   orjson.dumps(batch))])
    items = [item for rec in out.dlq for item in orjson.loads(rec.value)["items"]]
    got = sorted((i["index"], i["reason"], i.get("pointer")) for i in items)
    assert got == [(1, "off_grid", "/1/cells/1"), (2, "off_grid", "/2/kind")]


@pytest.mark.kernels
def test_a_reading_with_all_its_points_off_the_grid_goes_to_the_dead_letter_topic() -> None:
    """A camera placed in the wrong zone (or with lat/lon swapped where both are valid
    latitudes; in Thailand a swap is a ``schema`` rejection, longitude ~100 > 90): none of
    its points is on the grid. Counted, it would be a reading of an empty crowd, watering
    every cell down; it is refused. A reading with some points on the grid keeps them (the
    rest is past the zone's edge)."""
    zone = parse_zone(ZONE_DOC)
    pipe = Pipeline([zone])
    on, elsewhere = [16.0001, 100.0001], [16.8250, 100.2600]  # Phitsanulok town, 90 km off
    batch = [
        {"event_id": "misplaced", "sensor_id": "grid", "zone_id": "g", "kind": "grid_count",
         "ts": 1, "points": [elsewhere, [16.8251, 100.2601]]},
        {"event_id": "some", "sensor_id": "grid", "zone_id": "g", "kind": "grid_count",
         "ts": 1, "points": [on, elsewhere]},
        {"event_id": "cells", "sensor_id": "grid", "zone_id": "g", "kind": "grid_count",
         "ts": 1, "cells": [{"row": 0, "col": 0, "count": 3}]},
    ]
    out = pipe.process_sensor_batch([SourceMessage("sensors", 0, 0, 1, b"g",
                                                   orjson.dumps(batch))])
    items = [item for rec in out.dlq for item in orjson.loads(rec.value)["items"]]
    assert [(i["index"], i["reason"], i.get("pointer")) for i in items] == [
        (0, "off_grid", "/0/points")]
    store = GridStore()
    store.set_zones([zone])
    rej = store.check(grid_ev("s", 1, points=[(16.0, 16.0)]))  # swapped, both latitudes
    assert rej is not None
    assert rej.reason is Reason.OFF_GRID
    assert "none of its 1 points" in rej.detail
    assert store.check(grid_ev("k", 1, points=[(16.0001, 100.0001), (16.0, 16.0)])) is None
    # Just past the edge (a camera sees beyond the zone): ignored, not refused; the grid is
    # 100 m a side and "near" is 100 m around it: 89 m before the origin or 93 m past the
    # far edge is near, 111 m before or 109 m past is not.
    for dlat, dlon, ok in [(-0.0008, 0.0001, True), (0.0001, 0.0018, True),
                           (-0.0010, 0.0001, False), (0.0001, 0.00195, False)]:
        got = store.check(grid_ev("n", 1, points=[(16.0 + dlat, 100.0 + dlon)]))
        assert (got is None) is ok, (dlat, dlon)
    assert store.check(grid_ev("e", 1)) is None  # no cells, no points: an empty crowd
