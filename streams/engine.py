"""The seam between the pipeline and a density engine: its protocol and its output record.

``streams.density.WindowedDensityEngine`` (numba kernels) is the implementation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from schemas import Rejection, SensorEvent, Zone

log = logging.getLogger(__name__)


class DensityUpdate(NamedTuple):
    """One zone's density over the window ``(window_start_ms, window_end_ms]`` (event time).

    A NamedTuple, not a dataclass: one is built per zone per slide, and a frozen dataclass
    of 13 fields costs several times more to build."""

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
    sensor_age_ms: tuple[int, ...] = ()  # per entry of ``sensors``: window end - newest reading
    skewed_sensors: tuple[tuple[str, float], ...] = ()  # (sensor, clock offset s) if off
    confidence: float = math.nan  # 0..1: sensors' freshness x agreement; NaN when blind
    # Issue 16, line counters: exits per minute; exits per metre of counted width per second
    # (NaN: no counter with a ``width_m``); counter-flow, the largest min(entries, exits) per
    # metre per minute of one counter, and that counter's min/max balance (NaN: none).
    outflow_per_min: float = 0.0
    outflow_per_m_s: float = math.nan
    counterflow_per_m_min: float = math.nan
    counterflow_balance: float = math.nan
    # Zones with a grid (streams/grid.py): the densest cell (``r<row>c<col>``), its density
    # (p/m²; NaN without grid readings in the window) and every cell's, row-major.
    hot_cell: str | None = None
    hot_density: float = math.nan
    cells: tuple[float, ...] = ()
    # (sensor, entries/min, exits/min) of the zone-graph line counters (streams/spillover.py)
    line_flows: tuple[tuple[str, float, float], ...] = ()


class DensityEngine(Protocol):
    duplicates: int  # duplicate readings dropped so far
    clamped: int  # readings counted at arrival + lead so far (stamped further ahead)

    def set_zones(self, zones: Iterable[Zone]) -> None: ...

    def ingest(
        self, events: Sequence[SensorEvent], partitions: Sequence[int] | None = None,
        wall_ms: int | None = None, arrivals: Sequence[int] | None = None,
    ) -> list[tuple[int, Rejection]]:
        """Take a batch of events in arrival order (with the partition each came from, each
        one's arrival time, and the wall-clock time of the batch); return ``(index, why)`` of
        those it refused."""
        ...

    def snapshot(self, partition: int) -> dict[str, Any]:
        """State of the zones driven by ``partition`` (see :meth:`restore`)."""
        ...

    def restore(self, snap: dict[str, Any], now_ms: int | None = None) -> int:
        """Put a snapshot back; return the number of zones restored."""
        ...

    def advance(self, now_ms: int, partitions: Iterable[int] | None = None) -> None:
        """Wall-clock progress, for partitions that went quiet (only ``partitions``, if
        given: the others' idleness restarts at ``now_ms``)."""
        ...

    def drop_partition(self, partition: int) -> list[str]:
        """Forget the zones whose home partition is ``partition`` and its clocks; return
        those zones."""
        ...

    def partitions_in_use(self, lo: int, hi: int) -> list[int]:
        """The partitions in ``lo..hi-1`` with a clock or a zone they drive."""
        ...

    def finish(self) -> None:
        """End of input: close every window that holds data."""
        ...

    def watermark(self, partition: int) -> int | None:
        """The partition's watermark (event time, ms), or None before its first reading."""
        ...

    def skewed_sensors(self) -> list[tuple[str, float]]:
        """Sensors whose clocks are off their zone's median: (sensor_id, seconds)."""
        ...

    def stale_sensor_count(self) -> int:
        """Registered sensors with no reading in their zone's window."""
        ...

    def zone_clock_ms(self, zone_id: str) -> int | None:
        """The clock of the partition that drives ``zone_id``; None before its first event."""
        ...

    def clock_ms(self) -> int | None:
        """The newest partition clock, idle wall time included; None before any event."""
        ...

    def newest_event_ms(self) -> int:
        """The newest event time seen."""
        ...

    def emit(self) -> list[DensityUpdate]:
        """Windows closed since the previous call."""
        ...
