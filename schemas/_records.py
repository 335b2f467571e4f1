"""Typed records of the v1 wire contract, as the Python side holds them after validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import NamedTuple


class Kind(IntEnum):
    """Sensor kinds. The integer codes are what the numba kernels see."""

    LINE_COUNT = 0
    OCCUPANCY = 1
    DEVICE_COUNT = 2
    GRID_COUNT = 3  # people per grid cell (Wi-Fi / mobile-network grids) or camera points

    @property
    def wire(self) -> str:
        return self.name.lower()


KIND_BY_WIRE: dict[str, Kind] = {k.wire: k for k in Kind}


class Reason(StrEnum):
    """Dead-letter reason codes (``reason`` in a DLQ record); stable, part of the contract.

    The set is open: later versions may add reasons, and consumers must accept values they
    do not know (the JSON Schema lists the known ones as examples, not as an enum)."""

    NOT_JSON = "not_json"  # not UTF-8 JSON at all
    TOO_LARGE = "too_large"  # value longer than MAX_MESSAGE_BYTES
    SCHEMA = "schema"  # valid JSON, but breaks the JSON Schema
    EMPTY_BATCH = "empty_batch"  # a JSON array with no events
    BATCH_TOO_LONG = "batch_too_long"  # a JSON array with more than MAX_BATCH_EVENTS items
    UNKNOWN_ZONE = "unknown_zone"  # valid, but the zone is not in the registry
    LATE = "late"  # arrived after its window closed (event time older than the grace)
    UNDECODABLE = "undecodable"  # a record batch the Kafka client could not decode
    FUTURE = "future"  # stamped further ahead of its arrival than the allowed clock skew
    UNKNOWN_SENSOR = "unknown_sensor"  # the sensor is not listed for its zone
    ID_CONFLICT = "id_conflict"  # an event_id seen before, with other content
    STALE = "stale"  # a report too old to matter when it arrived
    REGISTRY = "registry"  # a zones-topic record that breaks a registry rule
    OFF_GRID = "off_grid"  # a grid_count reading for a zone without a grid, or off its grid


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one message, or one item of a batch message, was rejected."""

    reason: Reason
    detail: str
    index: int | None = None  # item index in a batch message; None for the whole message
    pointer: str | None = None  # JSON pointer of the fault inside the message, if known


@dataclass(slots=True)
class SensorEvent:
    """One validated sensor reading. Counts that do not apply to ``kind`` are 0."""

    event_id: str
    sensor_id: str
    zone_id: str
    kind: Kind
    ts_ms: int  # event time, epoch milliseconds UTC
    entries: int = 0
    exits: int = 0
    count: int = 0
    coverage_m2: float | None = None
    devices: int = 0
    confidence: float | None = None
    cells: tuple[tuple[int, int, int], ...] = ()  # grid_count: (row, col, count)
    points: tuple[tuple[float, float], ...] = ()  # grid_count: one (lat, lon) per person


class Report(NamedTuple):
    """One validated human report."""

    report_id: str
    ts_ms: int
    category: str
    source: str
    zone_id: str | None = None
    lat: float | None = None
    lon: float | None = None
    severity: int | None = None
    text: str | None = None
    lang: str | None = None


@dataclass(frozen=True, slots=True)
class SensorSpec:
    sensor_id: str
    kind: Kind
    calibration: float | None = None
    coverage_m2: float | None = None
    width_m: float | None = None  # line_count: width of the passage it counts, m


@dataclass(frozen=True, slots=True)
class BoundaryCounter:
    """A line counter on the boundary with a neighbour zone: ``into`` is the count
    (``entries`` or ``exits`` of that counter) that means "from the neighbour into this
    zone". The counter may be listed in either zone's ``sensors``."""

    sensor_id: str
    into: str  # "entries" | "exits"


@dataclass(frozen=True, slots=True)
class Neighbour:
    """An adjacent zone and the line counters on the shared boundary (zone graph)."""

    zone_id: str
    counters: tuple[BoundaryCounter, ...] = ()


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Density levels in persons per m² (each level is reached at >= the value)."""

    elevated: float
    high: float
    critical: float


@dataclass(frozen=True, slots=True)
class Grid:
    """A zone's grid of square cells for ``grid_count`` readings: ``origin`` is the
    south-west corner (lat, lon); row 0 is the southern row, col 0 the western column."""

    cell_m: float
    origin: tuple[float, float]
    rows: int
    cols: int

    def cell_id(self, index: int) -> str:
        """``r<row>c<col>`` of a row-major cell index."""
        return f"r{index // self.cols}c{index % self.cols}"


@dataclass(frozen=True, slots=True)
class Zone:
    zone_id: str
    name_th: str
    name_en: str
    area_m2: float
    crowd: str  # "standing" | "moving"
    sensors: tuple[SensorSpec, ...] = ()
    capacity: int | None = None
    polygon: tuple[tuple[float, float], ...] | None = None
    thresholds: Thresholds | None = None
    area_estimated: bool = False
    extra: dict[str, object] = field(default_factory=dict, compare=False)
    grid: Grid | None = None
    neighbours: tuple[Neighbour, ...] = ()  # adjacent zones (spill-over); optional


class Ack(NamedTuple):
    """An operator's acknowledgement of an alert episode (``safetour.acks.v1``)."""

    alert_id: str
    operator: str
    ts_ms: int  # processing time of the acknowledgement, epoch ms UTC
    note: str = ""
    zone_id: str | None = None
