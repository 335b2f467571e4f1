"""The dashboard's heat map data: where a grid zone's cells are (their bounds, against an
independent computation), and its newest cells, in state and in events, until they go
stale or a newer record has none."""

from __future__ import annotations

import asyncio
import math

import orjson
import pytest

from agents.dashboard.board import Board
from agents.dashboard.heatmap import cell_bounds
from benchmarks.detection import ZONES_FILE
from schemas import Zone, load_zones, parse_zone
from streams.grid import GridStore

ZONE = "wat-yai-grounds"
T0 = 1_770_000_000.0  # the board's clock in these tests, s

Queue = asyncio.Queue[tuple[object, str, bytes]]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def board(clock: Clock | None = None) -> tuple[Board, Queue]:
    b = Board(load_zones(ZONES_FILE), clock=clock or Clock())
    q: Queue = asyncio.Queue()
    b._subscribers.add(q)  # type: ignore[arg-type]
    return b, q


def state_of(b: Board, zone: str = ZONE) -> dict[str, object]:
    zones: dict[str, dict[str, object]] = {
        z["zone_id"]: z for z in orjson.loads(b.state())["zones"]}
    return zones[zone]


def record(cells: object, **extra: object) -> dict[str, object]:
    return {"zone_id": ZONE, "density": 0.5, "window_end": "2026-02-14T12:00:00Z",
            "cells": cells, **extra}


def events(q: Queue) -> list[tuple[str, dict[str, object]]]:
    out = []
    while not q.empty():
        _, kind, data = q.get_nowait()
        out.append((kind, orjson.loads(data)))
    return out


# -- where the cells are ---------------------------------------------------------------------
EARTH_M = 6_371_008.8  # mean Earth radius (IUGG)


def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    (la1, lo1), (la2, lo2) = (tuple(map(math.radians, p)) for p in (a, b))
    h = (math.sin((la2 - la1) / 2) ** 2
         + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2)
    return 2 * EARTH_M * math.asin(math.sqrt(h))


def clipped_fraction(polygon: list[tuple[float, float]], s: float, w: float, n: float,
                     e: float) -> float:
    """The share of the box (s, w)-(n, e) inside ``polygon``, exactly (Sutherland-Hodgman
    clipping of the polygon to the box, shoelace areas in degrees: the same projection for
    both, so it cancels), not by the engine's 8 x 8 sampling."""
    pts = [(lon, lat) for lat, lon in polygon]
    edges = [(lambda p: p[0] >= w, lambda p, q: _at_x(p, q, w)),
             (lambda p: p[0] <= e, lambda p, q: _at_x(p, q, e)),
             (lambda p: p[1] >= s, lambda p, q: _at_y(p, q, s)),
             (lambda p: p[1] <= n, lambda p, q: _at_y(p, q, n))]
    for inside, cross in edges:
        out: list[tuple[float, float]] = []
        for i, q in enumerate(pts):
            p = pts[i - 1]
            if inside(q):
                if not inside(p):
                    out.append(cross(p, q))
                out.append(q)
            elif inside(p):
                out.append(cross(p, q))
        pts = out
        if not pts:
            return 0.0
    area = abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1],
                                                                     strict=True))) / 2
    return area / ((e - w) * (n - s))


def _at_x(p: tuple[float, float], q: tuple[float, float], x: float) -> tuple[float, float]:
    return x, p[1] + (q[1] - p[1]) * (x - p[0]) / (q[0] - p[0])


def _at_y(p: tuple[float, float], q: tuple[float, float], y: float) -> tuple[float, float]:
    return p[0] + (q[0] - p[0]) * (y - p[1]) / (q[1] - p[1]), y


TRIANGLE = parse_zone({
    # A triangle far north (cos(lat) = 0.5: a cell is twice as wide in degrees as it is
    # high), under a 12 x 10 grid of 20 m cells: many cells are cut by its sides.
    "zone_id": "tri", "name": {"th": "ก", "en": "T"}, "area_m2": 20000, "crowd": "moving",
    "polygon": [[60.0, 10.0], [60.0, 10.0036], [60.00216, 10.0018]],
    "grid": {"cell_m": 20, "origin": [60.0, 10.0], "rows": 12, "cols": 10},
    "sensors": [{"sensor_id": "grid", "kind": "grid_count"}]})


@pytest.mark.parametrize("zone", [TRIANGLE, *(z for z in load_zones(ZONES_FILE) if z.grid)],
                         ids=lambda z: z.zone_id)
def test_cell_bounds_are_the_engines_cells_inside_the_zone(zone: Zone) -> None:
    g = zone.grid
    assert g is not None
    assert zone.polygon is not None
    got = cell_bounds(zone)
    assert got, "no cells"
    by_index = {c["i"]: c for c in got}
    assert [c["i"] for c in got] == sorted(by_index)  # row-major, each once
    store = GridStore()
    store.set_zones([zone])
    for i in range(g.rows * g.cols):
        r, col = divmod(i, g.cols)
        # The cell's box from its south-west corner, walked from the origin on the sphere:
        # r cells north and col cells east; each side cell_m long.
        m_lat_deg = math.degrees(g.cell_m / EARTH_M)
        s = g.origin[0] + r * m_lat_deg
        w = g.origin[1] + col * m_lat_deg / math.cos(math.radians(g.origin[0]))
        n = s + m_lat_deg
        e = w + m_lat_deg / math.cos(math.radians(g.origin[0]))
        frac = clipped_fraction(list(zone.polygon), s, w, n, e)
        if frac >= 0.3:
            assert i in by_index, f"cell {g.cell_id(i)}: {frac:.2f} inside, not sent"
        elif frac <= 0.2:
            assert i not in by_index, f"cell {g.cell_id(i)}: {frac:.2f} inside, sent"
        if i not in by_index:
            continue
        c = by_index[i]
        assert c["cell"] == f"r{r}c{col}"
        (cs, cw), (cn, ce) = c["bounds"]
        assert cs < cn
        assert cw < ce
        for got_deg, want_deg, scale in ((cs, s, 1.0), (cn, n, 1.0), (cw, w, 2.0),
                                         (ce, e, 2.0)):
            # within 0.5 % of a cell (the engine's metres per degree is not the sphere's)
            assert abs(got_deg - want_deg) <= 0.005 * m_lat_deg * scale * (r + col + 1)
        for a, b in (((cs, cw), (cn, cw)), ((cs, cw), (cs, ce)), ((cn, cw), (cn, ce))):
            assert haversine_m(a, b) == pytest.approx(g.cell_m, rel=0.005)
        # A person at the middle of the box is counted by the engine in that cell.
        assert store._bin(g, (((cs + cn) / 2, (cw + ce) / 2),)).tolist() == [i]
    if zone is TRIANGLE:  # the test means something: the triangle cuts the grid
        assert 0.3 < len(got) / (g.rows * g.cols) < 0.7  # it covers half the grid


def test_a_zone_without_a_grid_has_no_cells() -> None:
    [vihara] = [z for z in load_zones(ZONES_FILE) if z.zone_id == "wat-yai-vihara"]
    assert cell_bounds(vihara) == []
    assert state_of(board()[0], "wat-yai-vihara")["grid"] is None


# -- the newest cells ------------------------------------------------------------------------
def test_cells_of_a_grid_zone_are_kept_and_sent() -> None:
    b, q = board()
    cells = [0.5] * 29 + [None]
    b.on_density(record(cells))
    z = state_of(b)
    grid = z["grid"]
    assert isinstance(grid, dict)
    assert (grid["rows"], grid["cols"], grid["cell_m"]) == (6, 5, 50.0)
    [zone] = [z for z in load_zones(ZONES_FILE) if z.zone_id == ZONE]
    assert grid["cells"] == cell_bounds(zone)
    assert len(grid["cells"]) == 30  # every cell of the grounds is at least a quarter inside
    assert z["cells"] == cells
    assert state_of(b, "wat-yai-vihara")["cells"] is None
    [(kind, event)] = events(q)
    assert kind == "density"
    assert event["cells"] == cells


@pytest.mark.parametrize("bad", [[0.5] * 29, [0.5] * 29 + ["x"], [True] * 30, "cells", None])
def test_cells_that_do_not_fit_the_grid_are_not_shown(bad: object) -> None:
    b, _ = board()
    b.on_density(record(bad))
    assert state_of(b)["cells"] is None


@pytest.mark.parametrize("bad", [[0.5] * 29, "cells", None])
def test_a_newer_record_without_cells_takes_the_heat_map_away(bad: object) -> None:
    b, q = board()
    b.on_density(record([0.5] * 30))
    b.on_density(record(bad))
    assert state_of(b)["cells"] is None
    assert [e["cells"] for _, e in events(q)] == [[0.5] * 30, None]


def test_a_record_of_a_zone_without_a_grid_carries_no_cells() -> None:
    b, q = board()
    b.on_density({"zone_id": "wat-yai-vihara", "density": 0.5,
                  "window_end": "2026-02-14T12:00:00Z", "cells": [0.5]})
    [(_, event)] = events(q)
    assert "cells" not in event


def test_cells_go_away_when_they_are_stale() -> None:
    clock = Clock()
    b, q = board(clock)
    b.on_density(record([0.5] * 30))
    clock.now += b.stale_s
    b.expire_cells()
    assert state_of(b)["cells"] == [0.5] * 30  # not yet
    assert [k for k, _ in events(q)] == ["density"]
    clock.now += 1
    assert state_of(b)["cells"] is None  # a page that connects now sees none
    b.expire_cells()
    b.expire_cells()  # once
    assert events(q) == [("cells", {"zone_id": ZONE, "cells": None})]
    b.on_density(record([0.7] * 30))  # the grid speaks again
    assert state_of(b)["cells"] == [0.7] * 30


def test_cells_of_a_record_from_long_ago_are_not_shown() -> None:
    """A record replayed at start (its Kafka timestamp older than the staleness limit)."""
    b, q = board()
    old_ms = int((T0 - b.stale_s - 5) * 1000)
    b.on_density(record([0.5] * 30), ts_ms=old_ms)
    assert state_of(b)["cells"] is None
    [(_, event)] = events(q)
    assert event["cells"] is None
    b.on_density(record([0.6] * 30), ts_ms=int(T0 * 1000))
    assert state_of(b)["cells"] == [0.6] * 30
