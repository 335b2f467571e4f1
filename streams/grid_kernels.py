"""numba kernels of the grid density (hot spots inside a zone); twins in ``kernels_py.py``.

- :func:`bin_points`: camera detections (lat, lon) to row-major cell indices of the zone's
  grid (south-west origin, equirectangular metres: fine at the scale of a zone), -1 off it;
- :func:`window_cells`: a window's cell densities from its buckets' per-cell sums: each
  cell's count summed over the window's readings, divided by the number of readings (every
  ``grid_count`` reading is a snapshot of the whole grid: a cell it does not list holds
  nobody) and by the cell's area; NaN for a cell not judged (area 0) or a window without
  readings. Returns the densest cell (the lowest index on a tie) and its density.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def bin_points(lat: np.ndarray, lon: np.ndarray, olat: float, olon: float, m_lat: float,
               m_lon: float, cell_m: float, rows: int, cols: int, out: np.ndarray) -> None:
    """``out[i]``: the cell of point ``i`` (``m_lat``/``m_lon``: metres per degree)."""
    for i in range(lat.shape[0]):
        r = math.floor((lat[i] - olat) * m_lat / cell_m)
        c = math.floor((lon[i] - olon) * m_lon / cell_m)
        out[i] = r * cols + c if 0 <= r < rows and 0 <= c < cols else -1


@njit(cache=True, nogil=True)
def window_cells(sums: np.ndarray, reads: np.ndarray, areas: np.ndarray, out: np.ndarray
                 ) -> tuple[int, float]:
    """``sums[k, cell]`` per bucket, ``reads[k]`` readings per bucket, ``areas[cell]`` in
    m² (0: not judged) -> ``out[cell]`` densities; (densest cell, its density) or (-1, NaN)."""
    n = 0.0
    for j in range(reads.shape[0]):
        n += reads[j]
    best = -1
    best_d = math.nan
    for c in range(areas.shape[0]):
        if n <= 0.0 or areas[c] <= 0.0:
            out[c] = math.nan
            continue
        s = 0.0
        for j in range(sums.shape[0]):
            s += sums[j, c]
        d = s / n / areas[c]
        out[c] = d
        if best < 0 or d > best_d:
            best = c
            best_d = d
    return best, best_d
