"""The heat map of a zone with a grid: its newest cell densities from the density records.

A density record of a zone with a ``grid`` carries ``cells`` (row-major p/m², null for a
cell not judged or without readings) and ``hot_cell``; the board keeps the newest of each
zone and the page draws it as a grid of cells coloured by level (row 0, the south, at the
bottom). A record whose ``cells`` do not fit the zone's grid is shown without its heat map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas import Zone


def heat_cells(zone: Zone, d: Mapping[str, Any]) -> list[float | None] | None:
    """The record's cells if they fit ``zone``'s grid (numbers or nulls), else None."""
    g = zone.grid
    cells = d.get("cells")
    if g is None or not isinstance(cells, list) or len(cells) != g.rows * g.cols:
        return None
    ok = all(c is None or (isinstance(c, int | float) and not isinstance(c, bool)) for c in cells)
    return [None if c is None else float(c) for c in cells] if ok else None


def grid_json(zone: Zone) -> dict[str, Any] | None:
    """``{rows, cols, cell_m}`` of the zone's grid for the page, or None."""
    g = zone.grid
    return None if g is None else {"rows": g.rows, "cols": g.cols, "cell_m": g.cell_m}
