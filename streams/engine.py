"""Density engines: from validated sensor events to per-zone density updates.

``DensityEngine`` is the seam the worker and the offline replay talk to. ``SimpleDensityEngine``
is the walking skeleton's engine: correct but plain Python, one zone at a time. The numba
engine of the "Density engine" issue implements the same protocol.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from schemas import Kind, Reason, Rejection, SensorEvent, Zone

log = logging.getLogger(__name__)

DEFAULT_WINDOW_MS = 60_000


@dataclass(frozen=True, slots=True)
class DensityUpdate:
    """One zone's density over the window ``(window_start_ms, window_end_ms]`` (event time)."""

    zone_id: str
    window_start_ms: int
    window_end_ms: int
    occupancy: float
    density: float  # persons per m² of usable area; NaN when no sensor reported (blind)
    sensors: tuple[str, ...]  # sensors that contributed
    trend_per_min: float = math.nan  # least-squares slope of density, p/m² per minute
    flow_per_min: float = 0.0  # entries per minute over the window (line counters)
    freshness_ms: int = -1  # window end - newest reading in the window; -1 if none
    source: str | None = None  # sensor kind the density came from (fusion precedence)
    readings: int = 0  # readings in the window
    stale_sensors: tuple[str, ...] = ()  # registered sensors with no reading in the window


class DensityEngine(Protocol):
    def set_zones(self, zones: Iterable[Zone]) -> None: ...

    def ingest(self, events: Sequence[SensorEvent]) -> list[tuple[SensorEvent, Rejection]]:
        """Take a batch of events; return those it refused, with why."""
        ...

    def emit(self) -> list[DensityUpdate]:
        """Density of every zone that changed since the previous call."""
        ...


@dataclass(slots=True)
class _ZoneState:
    zone: Zone
    readings: deque[SensorEvent] = field(default_factory=deque)
    line_occupancy: int = 0
    last_ts_ms: int = 0


class SimpleDensityEngine:
    """Sliding window of ``window_ms`` ending at each zone's newest event time.

    Occupancy of a zone, first rule that applies:
    1. cameras (``occupancy``): newest count of each camera in the window, over the area the
       cameras cover, times the zone's area;
    2. line counters: running sum of entries - exits, clamped at 0;
    3. Wi-Fi/BLE (``device_count``): newest devices x the sensor's calibration (default 1).
    """

    def __init__(self, zones: Iterable[Zone] = (), *, window_ms: int = DEFAULT_WINDOW_MS) -> None:
        if window_ms <= 0:
            raise ValueError("window_ms must be > 0")
        self.window_ms = window_ms
        self._zones: dict[str, _ZoneState] = {}
        self._dirty: set[str] = set()
        self.set_zones(zones)

    def set_zones(self, zones: Iterable[Zone]) -> None:
        new = {z.zone_id: z for z in zones}
        for zid in list(self._zones):
            if zid not in new:
                del self._zones[zid]
                self._dirty.discard(zid)
        for zid, z in new.items():
            st = self._zones.get(zid)
            if st is None:
                self._zones[zid] = _ZoneState(z)
            else:
                st.zone = z
                self._dirty.add(zid)

    def ingest(self, events: Sequence[SensorEvent]) -> list[tuple[SensorEvent, Rejection]]:
        refused: list[tuple[SensorEvent, Rejection]] = []
        for ev in events:
            st = self._zones.get(ev.zone_id)
            if st is None:
                detail = f"zone {ev.zone_id!r} is not in the zone registry"
                refused.append((ev, Rejection(Reason.UNKNOWN_ZONE, detail)))
                continue
            if ev.kind is Kind.LINE_COUNT:
                st.line_occupancy = max(0, st.line_occupancy + ev.entries - ev.exits)
            st.readings.append(ev)
            st.last_ts_ms = max(st.last_ts_ms, ev.ts_ms)
            self._dirty.add(ev.zone_id)
        return refused

    def emit(self) -> list[DensityUpdate]:
        out = []
        for zid in sorted(self._dirty):
            st = self._zones[zid]
            end = st.last_ts_ms
            start = end - self.window_ms
            while st.readings and st.readings[0].ts_ms <= start:
                st.readings.popleft()
            out.append(self._compute(st, start, end))
        self._dirty.clear()
        return out

    def _compute(self, st: _ZoneState, start: int, end: int) -> DensityUpdate:
        newest: dict[str, SensorEvent] = {}
        for ev in st.readings:
            if start < ev.ts_ms <= end:
                cur = newest.get(ev.sensor_id)
                if cur is None or ev.ts_ms >= cur.ts_ms:
                    newest[ev.sensor_id] = ev
        cams = [e for e in newest.values() if e.kind is Kind.OCCUPANCY]
        lines = [e for e in newest.values() if e.kind is Kind.LINE_COUNT]
        devs = [e for e in newest.values() if e.kind is Kind.DEVICE_COUNT]
        specs = {s.sensor_id: s for s in st.zone.sensors}
        area = st.zone.area_m2
        used: list[SensorEvent]
        if cams:
            # Cameras see part of the zone: their local density (people over the area they
            # cover) is taken as the zone's density.
            seen = 0.0
            for e in cams:
                spec = specs.get(e.sensor_id)
                seen += e.coverage_m2 or (spec.coverage_m2 if spec else None) or area
            occ, used = sum(e.count for e in cams) / seen * area, cams
        elif lines:
            occ, used = float(st.line_occupancy), lines
        else:
            occ = 0.0
            for e in devs:
                spec = specs.get(e.sensor_id)
                occ += e.devices * ((spec.calibration if spec else None) or 1.0)
            used = devs
        return DensityUpdate(
            zone_id=st.zone.zone_id,
            window_start_ms=start,
            window_end_ms=end,
            occupancy=occ,
            density=occ / area,
            sensors=tuple(sorted(e.sensor_id for e in used)),
        )
