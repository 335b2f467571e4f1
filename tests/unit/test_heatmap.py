"""The dashboard's heat map data: the newest cells of a grid zone, in state and in events."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from agents.dashboard.dashboard import Board
from benchmarks.detection import ZONES_FILE
from schemas import load_zones

ZONE = "wat-yai-grounds"


def board() -> Board:
    return Board(load_zones(ZONES_FILE))


def test_cells_of_a_grid_zone_are_kept_and_sent() -> None:
    b = board()
    q: asyncio.Queue[tuple[object, str, bytes]] = asyncio.Queue()
    b._subscribers.add(q)  # type: ignore[arg-type]
    cells = [0.5] * 29 + [None]
    b.on_density({"zone_id": ZONE, "density": 0.5, "window_end": "2026-02-14T12:00:00Z",
                  "cells": cells})
    zones = {z["zone_id"]: z for z in orjson.loads(b.state())["zones"]}
    assert zones[ZONE]["grid"] == {"rows": 6, "cols": 5, "cell_m": 50.0}
    assert zones[ZONE]["cells"] == cells
    assert zones["wat-yai-vihara"]["grid"] is None
    assert zones["wat-yai-vihara"]["cells"] is None
    _, kind, data = q.get_nowait()
    assert kind == "density"
    assert orjson.loads(data)["cells"] == cells


@pytest.mark.parametrize("bad", [[0.5] * 29, [0.5] * 29 + ["x"], [True] * 30, "cells", None])
def test_cells_that_do_not_fit_the_grid_are_not_shown(bad: object) -> None:
    b = board()
    b.on_density({"zone_id": ZONE, "density": 0.5, "window_end": "2026-02-14T12:00:00Z",
                  "cells": bad})
    zones = {z["zone_id"]: z for z in orjson.loads(b.state())["zones"]}
    assert zones[ZONE]["cells"] is None
