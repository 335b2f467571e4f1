"""Grid densities inside a zone: ``grid_count`` readings per cell, the densest cell per window.

A zone with a ``grid`` in the registry (``grid: {cell_m, origin, rows, cols}``) takes
``grid_count`` readings: per-cell counts (Wi-Fi or mobile-network counts on a grid, like
Korea's 50 x 50 m cells) and/or points (camera detections, one [lat, lon] per person, binned
into the cells). Each reading is a snapshot of the whole grid (a cell it does not list holds
nobody); a sensor's ``calibration`` (people per device) scales its counts.

Cell areas (:func:`cell_areas`): a cell is clipped to the zone. With a polygon, a cell's area
is the part of it inside the polygon (sampled on 8 x 8 points) times ``area_m2`` / the
polygon's area (the usable share); a cell less than a quarter inside is not judged (a
sliver's density is noise: a handful of people there would read as a crush). Without a
polygon, a cell's area is at most ``area_m2`` (a 50 m cell, 2,500 m², over a 600 m² vihara
counts as 600 m²).

Windows are the density engine's: readings go into the zone's buckets of one slide, and when
the engine emits a zone's window ``(start, end]``, :meth:`GridStore.window` gives the cell
densities over the same buckets (the mean count per reading / the cell's area). A reading
is judged by the density engine's kernels like any other (its partition's clock, late,
duplicate, id conflict; ``kernels.GRID`` counts in none of their sums). The grid's buckets
are not in snapshots: after a restart the cells fill again within a window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from schemas import Grid, Reason, Rejection, SensorEvent, Zone

from . import grid_kernels as GK
from .alerts import point_in_polygon

M_PER_DEG_LAT = 111_320.0
"""Metres per degree of latitude (and of longitude at the equator): equirectangular, fine
at the scale of a zone."""
MIN_INSIDE = 0.25
"""A cell less inside the zone's polygon than this is not judged."""
SAMPLES = 8  # per side of a cell, to measure how much of it is inside the polygon
MAX_BUCKETS = 720  # per zone: a zone whose windows stop (no other sensor) keeps no more


def grid_total(ev: SensorEvent) -> int:
    """People a ``grid_count`` reading counts (its cells, or its points): what the kernels'
    content hash sees of it."""
    return sum(c for _, _, c in ev.cells) + len(ev.points)


def metres_per_degree(lat: float) -> tuple[float, float]:
    """(metres per degree of latitude, of longitude) at ``lat``."""
    return M_PER_DEG_LAT, M_PER_DEG_LAT * math.cos(math.radians(lat))


def polygon_area_m2(polygon: Iterable[tuple[float, float]]) -> float:
    """Shoelace area of a (lat, lon) polygon in m²."""
    pts = list(polygon)
    m_lat, m_lon = metres_per_degree(sum(p[0] for p in pts) / len(pts))
    lat0, lon0 = pts[0]
    xy = [((lon - lon0) * m_lon, (lat - lat0) * m_lat) for lat, lon in pts]
    s = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(xy, xy[1:] + xy[:1], strict=True))
    return abs(s) / 2


def cell_areas(zone: Zone) -> npt.NDArray[np.float64]:
    """Each cell's area in m² (row-major), 0 for a cell not judged (see the module doc)."""
    g = zone.grid
    assert g is not None
    full = g.cell_m * g.cell_m
    n = g.rows * g.cols
    if not zone.polygon:
        return np.full(n, min(full, zone.area_m2))
    scale = min(1.0, zone.area_m2 / max(polygon_area_m2(zone.polygon), 1e-9))
    m_lat, m_lon = metres_per_degree(g.origin[0])
    out = np.zeros(n)
    for i in range(n):
        r, c = divmod(i, g.cols)
        inside = 0
        for a in range(SAMPLES):
            for b in range(SAMPLES):
                lat = g.origin[0] + (r + (a + 0.5) / SAMPLES) * g.cell_m / m_lat
                lon = g.origin[1] + (c + (b + 0.5) / SAMPLES) * g.cell_m / m_lon
                inside += point_in_polygon(lat, lon, zone.polygon)
        frac = inside / SAMPLES**2
        if frac >= MIN_INSIDE:
            out[i] = full * frac * scale
    return out


@dataclass(slots=True)
class GridWindow:
    """One zone's cells over one window: densities row-major (NaN: not judged, or no
    reading), the densest cell (its id, e.g. ``r2c3``) and its density."""

    densities: tuple[float, ...]
    hot_cell: str | None
    hot_density: float


@dataclass(slots=True)
class _ZoneGrid:
    grid: Grid
    areas: npt.NDArray[np.float64]
    calibration: dict[str, float]
    buckets: dict[int, tuple[npt.NDArray[np.float64], list[int]]] = field(default_factory=dict)


class GridStore:
    """The grid readings of every zone with a grid, bucketed by the zone's slide."""

    def __init__(self) -> None:
        self._zones: dict[str, _ZoneGrid] = {}

    def set_zones(self, zones: Iterable[Zone]) -> None:
        new: dict[str, _ZoneGrid] = {}
        for z in zones:
            if z.grid is None:
                continue
            calib = {s.sensor_id: s.calibration or 1.0 for s in z.sensors}
            old = self._zones.get(z.zone_id)
            if old is not None and old.grid == z.grid:
                old.calibration = calib
                old.areas = cell_areas(z)
                new[z.zone_id] = old
            else:
                new[z.zone_id] = _ZoneGrid(z.grid, cell_areas(z), calib)
        self._zones = new

    def has_grid(self, zone_id: str) -> bool:
        return zone_id in self._zones

    def has_any(self) -> bool:
        return bool(self._zones)

    def check(self, ev: SensorEvent) -> Rejection | None:
        """Why a ``grid_count`` reading cannot be placed: its zone has no grid, a cell is off
        it, or it has points and none of them is on or near it, within the grid's own size
        on every side (points off the grid are only ignored: a camera sees past a zone's
        edge; all of them far off is a misplaced camera or lat/lon swapped, which would
        count as an empty crowd and water every cell down)."""
        zg = self._zones.get(ev.zone_id)
        if zg is None:
            return Rejection(Reason.OFF_GRID, f"{ev.event_id}: zone {ev.zone_id!r} has no grid "
                                              "in the zone registry", pointer="/kind")
        g = zg.grid
        for i, (r, c, _) in enumerate(ev.cells):
            if r >= g.rows or c >= g.cols:
                return Rejection(Reason.OFF_GRID, f"{ev.event_id}: cell row {r} col {c} is off "
                                 f"zone {ev.zone_id!r}'s {g.rows} x {g.cols} grid",
                                 pointer=f"/cells/{i}")
        if ev.points and not (self._bin(g, ev.points, max(g.rows, g.cols)) >= 0).any():
            return Rejection(Reason.OFF_GRID, f"{ev.event_id}: none of its {len(ev.points)} "
                             f"points is on or near zone {ev.zone_id!r}'s {g.rows} x {g.cols} "
                             "grid "
                             f"(first: {list(ev.points[0])}: misplaced camera or lat/lon swapped?)",
                             pointer="/points")
        return None

    @staticmethod
    def _bin(g: Grid, points: tuple[tuple[float, float], ...], margin: int = 0
             ) -> npt.NDArray[np.int64]:
        """Each point's cell (row-major), -1 off the grid; with ``margin``, of the grid
        grown by that many cells on every side."""
        pts = np.array(points, dtype=np.float64)
        cells = np.empty(len(points), dtype=np.int64)
        m_lat, m_lon = metres_per_degree(g.origin[0])
        olat = g.origin[0] - margin * g.cell_m / m_lat
        olon = g.origin[1] - margin * g.cell_m / m_lon
        GK.bin_points(pts[:, 0], pts[:, 1], olat, olon, m_lat, m_lon, g.cell_m,
                      g.rows + 2 * margin, g.cols + 2 * margin, cells)
        return cells

    def add(self, ev: SensorEvent, slide_ms: int) -> None:
        """One ``grid_count`` reading the density engine took (checked, in time, not a
        repeat) into its zone's bucket of ``slide_ms``."""
        zg = self._zones[ev.zone_id]
        g = zg.grid
        b = ev.ts_ms // slide_ms
        bucket = zg.buckets.get(b)
        if bucket is None:
            bucket = zg.buckets[b] = (np.zeros(g.rows * g.cols), [0])
            if len(zg.buckets) > MAX_BUCKETS:
                del zg.buckets[min(zg.buckets)]
        sums, reads = bucket
        k = zg.calibration.get(ev.sensor_id, 1.0)
        if ev.cells:
            idx = np.fromiter((r * g.cols + c for r, c, _ in ev.cells), dtype=np.int64,
                              count=len(ev.cells))
            cnt = np.fromiter((n for _, _, n in ev.cells), dtype=np.float64,
                              count=len(ev.cells))
            np.add.at(sums, idx, cnt * k)
        if ev.points:
            cells = self._bin(g, ev.points)
            on = cells[cells >= 0]
            np.add.at(sums, on, k)
        reads[0] += 1

    def window(self, zone_id: str, start_ms: int, end_ms: int, slide_ms: int
               ) -> GridWindow | None:
        """The zone's cells over the window ``(start, end]`` (its buckets ``start // slide``
        .. ``end // slide - 1``); None for a zone without a grid. Buckets older than the next
        window are dropped."""
        zg = self._zones.get(zone_id)
        if zg is None:
            return None
        lo, hi = start_ms // slide_ms, end_ms // slide_ms
        present = [zg.buckets[b] for b in range(lo, hi) if b in zg.buckets]
        n = zg.areas.shape[0]
        if present:
            sums = np.stack([p[0] for p in present])
            reads = np.array([p[1][0] for p in present], dtype=np.float64)
        else:
            sums, reads = np.zeros((0, n)), np.zeros(0)
        out = np.empty(n)
        best, best_d = GK.window_cells(sums, reads, zg.areas, out)
        for b in [b for b in zg.buckets if b <= lo]:
            del zg.buckets[b]
        # float(): the kernel returns a numpy scalar when it runs as Python (no JIT).
        return GridWindow(tuple(out.tolist()), zg.grid.cell_id(best) if best >= 0 else None,
                          float(best_d))
