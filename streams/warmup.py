"""Compile the numba kernels before the first fetch, not inside it.

The kernels are ``@njit(cache=True)``: a process whose cache (``__pycache__`` beside the
modules, or ``NUMBA_CACHE_DIR``) holds them loads machine code in milliseconds. A fresh
install, or a container whose cache is not kept, compiles instead, at the kernel's first
call. In the worker that call is the first fetch, on the event loop: about 20 s of CPU before
the first window (34% of a 100,000-reading benchmark run after ``make bootstrap``).

:func:`warm_up` runs a made-up zone through a :class:`~streams.pipeline.Pipeline` of its own:
readings of every kind (a camera, a line counter, a Wi-Fi counter, a grid of cells and
points), rising so that the alarm's Theil–Sen fits run. That compiles (or loads) every kernel
with the argument types the worker passes. Nothing of it is kept. A test checks, in a fresh
process, that a pipeline run after it compiles nothing new.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson

from schemas import parse_zone

from .pipeline import Pipeline
from .records import SourceMessage

_T0 = 946_684_800_000  # 2000-01-01T00:00:00Z: made-up event time, far from any real one
_ZONE = {
    "zone_id": "warm-up", "name": {"th": "อุ่นเครื่อง", "en": "warm-up"}, "area_m2": 400,
    "crowd": "standing",
    "grid": {"cell_m": 10, "origin": [16.0, 100.0], "rows": 2, "cols": 2},
    "sensors": [{"sensor_id": "w-cam", "kind": "occupancy"},
                {"sensor_id": "w-door", "kind": "line_count", "width_m": 4.0},
                {"sensor_id": "w-wifi", "kind": "device_count"},
                {"sensor_id": "w-grid", "kind": "grid_count"}],
}


def _readings(k: int, ts: int) -> list[dict[str, object]]:
    n = 40 + 25 * k  # rising: past the levels, so the trend, forecast and indicators run
    base = {"zone_id": "warm-up", "ts": ts}
    return [
        base | {"event_id": f"c{k}", "sensor_id": "w-cam", "kind": "occupancy", "count": n},
        base | {"event_id": f"d{k}", "sensor_id": "w-door", "kind": "line_count",
                "entries": 30 + k, "exits": 5},
        base | {"event_id": f"w{k}", "sensor_id": "w-wifi", "kind": "device_count",
                "devices": n},
        base | {"event_id": f"g{k}", "sensor_id": "w-grid", "kind": "grid_count",
                "cells": [{"row": 0, "col": 0, "count": n // 2},
                          {"row": 1, "col": 1, "count": n // 4}],
                "points": [[16.00002, 100.00002]]},
    ]


def warm_up(steps: int = 48) -> float:
    """Run every numba kernel once (compiling it if no cache holds it); returns seconds."""
    started = time.perf_counter()
    pipe = Pipeline([parse_zone(_ZONE)],
                    clock=lambda: datetime.fromtimestamp(_T0 / 1000, UTC))
    for k in range(steps):
        ts = _T0 + k * 5000
        value = orjson.dumps(_readings(k, ts))
        pipe.process_sensor_batch([SourceMessage("warm-up", 0, k, None, b"warm-up", value)])
    pipe.finish()
    return time.perf_counter() - started
