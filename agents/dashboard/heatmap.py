"""The heat map of a zone with a grid: its newest cell densities, and where its cells are.

A density record of a zone with a ``grid`` carries ``cells`` (row-major p/m², null for a
cell not judged or without readings) and ``hot_cell``; the board keeps the newest of each
zone and the page draws them over the zone on the map (one rectangle a cell, at the bounds
:func:`cell_bounds` gives) and as a small grid in the zone's row (row 0, the south, at the
bottom), each coloured by level. A newer record whose ``cells`` do not fit the zone's grid
(or that has none) takes the heat map away, as do cells older than the board's staleness.

The cells' bounds are computed here, as the density engine places them
(``streams.grid``: equirectangular from the grid's south-west ``origin``, metres per degree at
its latitude), so the page does no geometry of its own; only the cells the engine judges (at
least a quarter inside the zone's polygon, ``streams.grid.cell_areas``) are sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas import Zone
from streams.grid import cell_areas, metres_per_degree

__all__ = ["HeatMaps", "cell_bounds", "grid_json", "heat_cells"]

DIGITS = 7  # decimal places of a cell corner's degrees: about 1 cm


def heat_cells(zone: Zone, d: Mapping[str, Any]) -> list[float | None] | None:
    """The record's cells if they fit ``zone``'s grid (numbers or nulls), else None."""
    g = zone.grid
    cells = d.get("cells")
    if g is None or not isinstance(cells, list) or len(cells) != g.rows * g.cols:
        return None
    ok = all(c is None or (isinstance(c, int | float) and not isinstance(c, bool)) for c in cells)
    return [None if c is None else float(c) for c in cells] if ok else None


def cell_bounds(zone: Zone) -> list[dict[str, Any]]:
    """The judged cells of ``zone``'s grid (none without a grid), row-major: ``{"cell":
    "r2c3", "i": row-major index, "bounds": [[south, west], [north, east]]}`` in degrees
    (Leaflet's LatLngBounds)."""
    g = zone.grid
    if g is None:
        return []
    m_lat, m_lon = metres_per_degree(g.origin[0])
    dlat, dlon = g.cell_m / m_lat, g.cell_m / m_lon
    out: list[dict[str, Any]] = []
    for i, area in enumerate(cell_areas(zone).tolist()):
        if area <= 0:
            continue
        r, c = divmod(i, g.cols)
        south, west = g.origin[0] + r * dlat, g.origin[1] + c * dlon
        out.append({"cell": g.cell_id(i), "i": i, "bounds": [
            [round(south, DIGITS), round(west, DIGITS)],
            [round(south + dlat, DIGITS), round(west + dlon, DIGITS)]]})
    return out


def grid_json(zone: Zone, bounds: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """``{rows, cols, cell_m, cells}`` of the zone's grid for the page (``cells``: its
    :func:`cell_bounds`, computed unless given), or None."""
    g = zone.grid
    if g is None:
        return None
    return {"rows": g.rows, "cols": g.cols, "cell_m": g.cell_m,
            "cells": cell_bounds(zone) if bounds is None else bounds}


@dataclass
class HeatMaps:
    """The newest cells of every zone with a grid, and when they arrived (wall clock, s).
    Each zone's grid, with its cells' bounds, is computed once."""

    grids: dict[str, dict[str, Any]] = field(default_factory=dict)
    cells: dict[str, list[float | None]] = field(default_factory=dict)
    at: dict[str, float] = field(default_factory=dict)
    _zones: dict[str, Zone] = field(default_factory=dict)

    @classmethod
    def of(cls, zones: Iterable[Zone]) -> HeatMaps:
        h = cls()
        for z in zones:
            g = grid_json(z)
            if g is not None:
                h.grids[z.zone_id], h._zones[z.zone_id] = g, z
        return h

    def has_grid(self, zone: str) -> bool:
        return zone in self._zones

    def on_record(self, zone: str, d: Mapping[str, Any], at: float) -> list[float | None] | None:
        """A density record of ``zone`` (a zone with a grid), arrived at ``at``: its cells,
        kept as the zone's newest, or None (the heat map is taken away)."""
        cells = heat_cells(self._zones[zone], d)
        if cells is None:
            self.cells.pop(zone, None)
            self.at.pop(zone, None)
        else:
            self.cells[zone], self.at[zone] = cells, at
        return cells

    def fresh(self, zone: str, now: float, stale_s: float) -> list[float | None] | None:
        """The zone's cells unless they are older than ``stale_s`` (or it has none)."""
        at = self.at.get(zone)
        return None if at is None or now - at > stale_s else self.cells.get(zone)

    def expire(self, now: float, stale_s: float) -> list[str]:
        """Forget the cells older than ``stale_s``; the zones whose heat map that took away."""
        old = [z for z, at in self.at.items() if now - at > stale_s]
        for z in old:
            del self.cells[z], self.at[z]
        return old
