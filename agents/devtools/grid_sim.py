"""Grid sensors of the simulator: per-cell counts over a zone's grid, with dense pockets.

A zone with a ``grid`` and a ``grid_count`` sensor spreads its true occupancy over its
judged cells (``streams.grid.cell_areas``) by area, except a scenario's *pocket*: one cell
whose true density follows its own target (the people there are part of the zone's
occupancy). The sensor reports every 10 s the people per cell with ±5 % noise per cell,
through its own gateway (batches every 3 s, jitter, 2 % re-sent, 0.5 % late), from its own
``random.Random``: the other sensors' readings are byte for byte what they were without it.

Ground truth (``truth["zones"][zone]["hot"]``): every 5 s the true densest cell and its
density, and per level the episodes when that cell was at or above the level while the true
zone mean was not (a hot spot), with the cell at least ``HOT_RATIO`` times the mean.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas import Kind, SensorSpec, Zone
from streams.grid import cell_areas
from streams.hotspot import HOT_RATIO
from streams.levels import Level, level_for, resolve_thresholds

INTERVAL_S = 10


@dataclass(frozen=True)
class Pocket:
    """A dense pocket: the true density of one grid cell over time."""

    row: int
    col: int
    target: Callable[[float], float]  # seconds since start -> the cell's density, p/m²


@dataclass
class GridSim:
    zone: Zone
    spec: SensorSpec
    rng: random.Random
    pocket: Pocket | None
    areas: list[float]
    phase_s: int
    seq: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)
    series: list[tuple[int, str, float, float]] = field(default_factory=list)

    def extra(self, t: float, base: float) -> float:
        """People the pocket holds above the zone's background density ``base`` at ``t``."""
        if self.pocket is None:
            return 0.0
        return max(0.0, self.pocket.target(t) - base) * self._pocket_area()

    def _pocket_area(self) -> float:
        assert self.pocket is not None
        g = self.zone.grid
        assert g is not None
        return self.areas[self.pocket.row * g.cols + self.pocket.col]

    def people(self, occ: float, t: float) -> list[float]:
        """True people per cell: the pocket at its target (at most everyone), the rest of
        the zone spread over the other judged cells by area."""
        cells = [0.0] * len(self.areas)
        pocket_i = -1
        if self.pocket is not None:
            g = self.zone.grid
            assert g is not None
            pocket_i = self.pocket.row * g.cols + self.pocket.col
            cells[pocket_i] = min(occ, self.pocket.target(t) * self.areas[pocket_i])
        rest = occ - (cells[pocket_i] if pocket_i >= 0 else 0.0)
        other = sum(a for i, a in enumerate(self.areas) if i != pocket_i)
        for i, a in enumerate(self.areas):
            if i != pocket_i and a > 0 and other > 0:
                cells[i] = rest * a / other
        return cells

    def step(self, t: int, now_ms: int, occ: float) -> None:
        g = self.zone.grid
        assert g is not None
        cells = self.people(occ, t)
        if t % 5 == 0:
            dens = [c / a if a > 0 else 0.0 for c, a in zip(cells, self.areas, strict=True)]
            best = max(range(len(dens)), key=dens.__getitem__)
            self.series.append((now_ms, g.cell_id(best), dens[best], occ / self.zone.area_m2))
        if t < self.phase_s or (t - self.phase_s) % INTERVAL_S:
            return
        self.seq += 1
        reading = [{"row": i // g.cols, "col": i % g.cols,
                    "count": max(0, round(c * self.rng.gauss(1.0, 0.05)))}
                   for i, c in enumerate(cells) if self.areas[i] > 0]
        self.pending.append({
            "event_id": f"{self.spec.sensor_id}-{self.seq}", "sensor_id": self.spec.sensor_id,
            "zone_id": self.zone.zone_id, "kind": Kind.GRID_COUNT.wire, "ts": now_ms,
            "cells": [c for c in reading if c["count"]]})

    def flush(self, now_ms: int, grace_s: float) -> Iterator[tuple[int, bytes, bytes]]:
        batch, self.pending = self.pending, []
        if not batch:
            return
        key = self.zone.zone_id.encode()
        rng = self.rng
        late = [e for e in batch if rng.random() < 0.005]
        ontime = [e for e in batch if e not in late]
        if ontime:
            yield now_ms + rng.randint(0, 3000), key, orjson.dumps(ontime)
            for e in ontime:
                if rng.random() < 0.02:
                    yield now_ms + rng.randint(500, 6000), key, orjson.dumps([e])
        for e in late:
            yield now_ms + int((grace_s + rng.uniform(20, 40)) * 1000), key, orjson.dumps([e])

    def truth(self) -> dict[str, Any]:
        z = self.zone
        th = resolve_thresholds(z.crowd, z.thresholds)
        episodes: dict[str, list[dict[str, Any]]] = {}
        for lv in (Level.ELEVATED, Level.HIGH, Level.CRITICAL):
            eps: list[dict[str, Any]] = []
            cur: dict[str, Any] | None = None
            for ts, cell, d, mean in self.series:
                if level_for(d, th) >= lv > level_for(mean, th) and d >= HOT_RATIO * mean:
                    if cur is None:
                        cur = {"start_ms": ts, "end_ms": ts, "cell": cell, "peak": d}
                        eps.append(cur)
                    cur["end_ms"] = ts
                    cur["peak"] = round(max(cur["peak"], d), 3)
                else:
                    cur = None
            episodes[lv.wire] = eps
        return {"episodes": episodes,
                "series": [[ts, cell, round(d, 4)] for ts, cell, d, _ in self.series]}


def grid_sims(zones: list[Zone], pockets: dict[str, Pocket], seed: int) -> list[GridSim]:
    """One simulated grid sensor per ``grid_count`` sensor of a zone with a grid."""
    out = []
    for z in zones:
        if z.grid is None:
            continue
        for spec in z.sensors:
            if spec.kind is Kind.GRID_COUNT:
                rng = random.Random(f"{seed}:{spec.sensor_id}")
                out.append(GridSim(z, spec, rng, pockets.get(z.zone_id),
                                   cell_areas(z).tolist(), rng.randrange(INTERVAL_S)))
    return out
