"""Fast decode and validation of the v1 wire contract.

The JSON Schema files in ``schemas/json/`` are the contract integrators read; this module is a
hand-written validator that accepts and rejects exactly the same documents (a parity test runs
it against the reference ``jsonschema`` validator on thousands of generated documents), at a
fraction of the cost: one ``orjson.loads`` per message and a flat checklist per event.

JSON Schema details mirrored here on purpose:
- ``integer`` admits floats with no fractional part (``3.0``); booleans are never numbers.
- ``maxLength`` counts code points (Python ``len``).
- the RFC 3339 pattern plus the ``date-time`` format (real calendar dates, year >= 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, TypeVar, cast

import orjson

from ._records import KIND_BY_WIRE, Ack, Kind, Reason, Rejection, Report, SensorEvent

T = TypeVar("T")

MAX_MESSAGE_BYTES: Final = 512 * 1024
"""Largest message value accepted on the input topics; larger values are dead-lettered."""
MAX_BATCH_EVENTS: Final = 5000
"""Most events in one gateway batch (a JSON array value)."""
MAX_COUNT: Final = 1_000_000
MAX_COVERAGE_M2: Final = 10_000_000
MAX_EPOCH_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_CELLS: Final = 4096  # cells in one grid_count reading
MAX_POINTS: Final = 5000  # points in one grid_count reading
MAX_GRID_INDEX: Final = 999  # highest row or column of a grid

_TS_RE: Final = re.compile(
    r"^([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):([0-5][0-9]):"
    r"([0-5][0-9])(\.[0-9]{1,9})?([Zz]|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))(?!\n)$"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

REPORT_CATEGORIES: Final = frozenset(
    ("overcrowding", "crush", "injury", "medical", "fire", "violence", "lost_person", "other")
)
REPORT_SOURCES: Final = frozenset(
    ("tourist", "staff", "police", "volunteer", "operator", "citizen_app")
)
MAX_REPORT_TEXT: Final = 2000


class _Invalid(Exception):
    """Internal: carries the JSON pointer and message of the first violation found."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what


def _is_int(v: object) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and v.is_integer()


def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _str(doc: dict[str, Any], key: str, lo: int, hi: int, base: str) -> str:
    v = doc[key]
    if not isinstance(v, str):
        raise _Invalid(f"{base}/{key}", "must be a string")
    n = len(v)
    if n < lo or n > hi:
        raise _Invalid(f"{base}/{key}", f"length must be {lo}..{hi}, got {n}")
    return v


def _opt_str(doc: dict[str, Any], key: str, lo: int, hi: int, base: str) -> str | None:
    return _str(doc, key, lo, hi, base) if key in doc else None


def _int(doc: dict[str, Any], key: str, lo: int, hi: int, base: str) -> int:
    v = doc[key]
    if not _is_int(v):
        raise _Invalid(f"{base}/{key}", "must be an integer")
    if v < lo or v > hi:
        raise _Invalid(f"{base}/{key}", f"must be in {lo}..{hi}")
    return int(v)


def _opt_int(doc: dict[str, Any], key: str, lo: int, hi: int, base: str) -> int:
    return _int(doc, key, lo, hi, base) if key in doc else 0


def _num(
    doc: dict[str, Any], key: str, lo: float, hi: float, base: str, *, lo_exclusive: bool = False
) -> float:
    v = doc[key]
    if not _is_num(v):
        raise _Invalid(f"{base}/{key}", "must be a number")
    if (v <= lo if lo_exclusive else v < lo) or v > hi:
        bound = f"({lo}" if lo_exclusive else f"[{lo}"
        raise _Invalid(f"{base}/{key}", f"must be in {bound}, {hi}]")
    return float(v)


def parse_ts(v: object, where: str = "/ts") -> int:
    """Event time of the contract (RFC 3339 with offset, or epoch ms) as epoch milliseconds."""
    if isinstance(v, str):
        m = _TS_RE.match(v)
        if m is None:
            raise _Invalid(where, "must be RFC 3339 with an offset, e.g. 2026-02-15T19:30:00+07:00")
        year, month, day, hh, mi, ss, frac, _zone, sign, oh, om = m.groups()
        try:
            dt = datetime(int(year), int(month), int(day), int(hh), int(mi), int(ss), tzinfo=UTC)
        except ValueError:
            raise _Invalid(where, "is not a real calendar date") from None
        ms = (dt - _EPOCH) // timedelta(milliseconds=1)
        if frac:
            ms += int((frac[1:] + "00")[:3])
        if sign is not None:
            offset_ms = (int(oh) * 60 + int(om)) * 60_000
            ms += -offset_ms if sign == "+" else offset_ms
        return ms
    if _is_int(v):
        iv = int(cast(float, v))
        if 0 <= iv <= MAX_EPOCH_MS:
            return iv
        raise _Invalid(where, f"epoch milliseconds must be in 0..{MAX_EPOCH_MS}")
    raise _Invalid(where, "must be an RFC 3339 string or integer epoch milliseconds")


_COUNT_FIELDS = ("entries", "exits", "count", "devices")
_NEEDS = {Kind.LINE_COUNT: ("entries", "exits"), Kind.OCCUPANCY: ("count",),
          Kind.DEVICE_COUNT: ("devices",)}  # grid_count always takes the full path


def _event_fast(doc: dict[str, Any]) -> SensorEvent | None:
    """The common, valid shape in a few checks (exact int counts and epoch-ms ts, no
    coverage or confidence); None sends the document down the full path, which also names
    the fault. Accepts nothing the full path would refuse, and builds the same event."""
    get = doc.get
    event_id, sensor_id, zone_id = get("event_id"), get("sensor_id"), get("zone_id")
    ts, kind_s = get("ts"), get("kind")
    if not (type(event_id) is str and type(sensor_id) is str and type(zone_id) is str
            and type(ts) is int and type(kind_s) is str
            and 0 < len(event_id) <= 128 and 0 < len(sensor_id) <= 128
            and 0 < len(zone_id) <= 64 and 0 <= ts <= MAX_EPOCH_MS
            and "coverage_m2" not in doc and "confidence" not in doc
            and "cells" not in doc and "points" not in doc):
        return None
    kind = KIND_BY_WIRE.get(kind_s)
    if kind is None or kind is Kind.GRID_COUNT:
        return None
    counts = [0, 0, 0, 0]
    for i, key in enumerate(_COUNT_FIELDS):
        v = get(key)
        if v is None:
            if key in doc:
                return None
            continue
        if type(v) is not int or not 0 <= v <= MAX_COUNT:
            return None
        counts[i] = v
    for key in _NEEDS[kind]:
        if key not in doc:
            return None
    return SensorEvent(event_id, sensor_id, zone_id, kind, ts, counts[0], counts[1], counts[2],
                       None, counts[3], None)


def _event(doc: object, base: str) -> SensorEvent:
    if type(doc) is dict:
        fast = _event_fast(doc)
        if fast is not None:
            return fast
    if not isinstance(doc, dict):
        raise _Invalid(base or "/", "must be an object")
    for key in ("event_id", "sensor_id", "zone_id", "kind", "ts"):
        if key not in doc:
            raise _Invalid(base or "/", f"missing required field {key!r}")
    event_id = _str(doc, "event_id", 1, 128, base)
    sensor_id = _str(doc, "sensor_id", 1, 128, base)
    zone_id = _str(doc, "zone_id", 1, 64, base)
    kind_s = doc["kind"]
    kind = KIND_BY_WIRE.get(kind_s) if isinstance(kind_s, str) else None
    if kind is None:
        raise _Invalid(f"{base}/kind",
                       "must be one of line_count, occupancy, device_count, grid_count")
    ts_ms = parse_ts(doc["ts"], f"{base}/ts")
    # Every declared field is type-checked whatever the kind (as the schema's properties are).
    entries = _opt_int(doc, "entries", 0, MAX_COUNT, base)
    exits = _opt_int(doc, "exits", 0, MAX_COUNT, base)
    count = _opt_int(doc, "count", 0, MAX_COUNT, base)
    devices = _opt_int(doc, "devices", 0, MAX_COUNT, base)
    coverage = (
        _num(doc, "coverage_m2", 0, MAX_COVERAGE_M2, base, lo_exclusive=True)
        if "coverage_m2" in doc
        else None
    )
    confidence = _num(doc, "confidence", 0, 1, base) if "confidence" in doc else None
    cells = _cells(doc["cells"], f"{base}/cells") if "cells" in doc else ()
    points = _points(doc["points"], f"{base}/points") if "points" in doc else ()
    if kind is Kind.LINE_COUNT:
        for key in ("entries", "exits"):
            if key not in doc:
                raise _Invalid(base or "/", f"line_count needs {key!r}")
    elif kind is Kind.OCCUPANCY:
        if "count" not in doc:
            raise _Invalid(base or "/", "occupancy needs 'count'")
    elif kind is Kind.DEVICE_COUNT:
        if "devices" not in doc:
            raise _Invalid(base or "/", "device_count needs 'devices'")
    elif "cells" not in doc and "points" not in doc:
        raise _Invalid(base or "/", "grid_count needs 'cells' or 'points'")
    return SensorEvent(
        event_id, sensor_id, zone_id, kind, ts_ms, entries, exits, count, coverage, devices,
        confidence, cells, points,
    )


def _cells(v: object, where: str) -> tuple[tuple[int, int, int], ...]:
    """grid_count ``cells``: ``[{row, col, count}, ...]`` (cells not listed hold nobody)."""
    if not isinstance(v, list):
        raise _Invalid(where, "must be an array")
    if len(v) > MAX_CELLS:
        raise _Invalid(where, f"at most {MAX_CELLS} cells, got {len(v)}")
    out = []
    for i, c in enumerate(v):
        at = f"{where}/{i}"
        if not isinstance(c, dict):
            raise _Invalid(at, "must be an object")
        for key in ("row", "col", "count"):
            if key not in c:
                raise _Invalid(at, f"missing required field {key!r}")
        out.append((_int(c, "row", 0, MAX_GRID_INDEX, at), _int(c, "col", 0, MAX_GRID_INDEX, at),
                    _int(c, "count", 0, MAX_COUNT, at)))
    return tuple(out)


def _points(v: object, where: str) -> tuple[tuple[float, float], ...]:
    """grid_count ``points``: ``[[lat, lon], ...]``, one per person detected."""
    if not isinstance(v, list):
        raise _Invalid(where, "must be an array")
    if len(v) > MAX_POINTS:
        raise _Invalid(where, f"at most {MAX_POINTS} points, got {len(v)}")
    out = []
    for i, p in enumerate(v):
        at = f"{where}/{i}"
        if not isinstance(p, list) or len(p) != 2:
            raise _Invalid(at, "must be a [lat, lon] pair")
        lat, lon = p
        if not _is_num(lat) or not -90 <= lat <= 90:
            raise _Invalid(f"{at}/0", "latitude must be a number in [-90, 90]")
        if not _is_num(lon) or not -180 <= lon <= 180:
            raise _Invalid(f"{at}/1", "longitude must be a number in [-180, 180]")
        out.append((float(lat), float(lon)))
    return tuple(out)


def validate_sensor_event(doc: object) -> SensorEvent:
    """Validate one decoded sensor-event object; raises ``ValueError`` naming the first fault."""
    try:
        return _event(doc, "")
    except _Invalid as exc:
        raise ValueError(str(exc)) from None


def decode_sensor_message(value: bytes | None) -> tuple[list[SensorEvent], list[Rejection]]:
    """Decode one message value of the sensor topic into its valid events and its rejections.

    A single event, or a batch (JSON array) whose items are judged one by one: the good items
    of a batch come back as events even when others are rejected.
    """
    events, _indices, rejections = decode_sensor_items(value)
    return events, rejections


def decode_sensor_items(
    value: bytes | None,
) -> tuple[list[SensorEvent], list[int], list[Rejection]]:
    """:func:`decode_sensor_message`, with the item index of each event in its message (0
    for a single-event message), so later verdicts on an event can name its item."""
    if value is None:
        return [], [], [Rejection(Reason.NOT_JSON, "message has no value (tombstone)")]
    if len(value) > MAX_MESSAGE_BYTES:
        detail = f"value is {len(value)} bytes; the maximum is {MAX_MESSAGE_BYTES}"
        return [], [], [Rejection(Reason.TOO_LARGE, detail)]
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return [], [], [Rejection(Reason.NOT_JSON, f"not UTF-8 JSON: {exc}")]
    if isinstance(doc, list):
        n = len(doc)
        if n == 0:
            return [], [], [Rejection(Reason.EMPTY_BATCH, "batch array has no events")]
        if n > MAX_BATCH_EVENTS:
            detail = f"batch has {n} events; the maximum is {MAX_BATCH_EVENTS}"
            return [], [], [Rejection(Reason.BATCH_TOO_LONG, detail)]
        events: list[SensorEvent] = []
        indices: list[int] = []
        rejections: list[Rejection] = []
        for i, item in enumerate(doc):
            try:
                events.append(_event(item, f"/{i}"))
                indices.append(i)
            except _Invalid as exc:
                rejections.append(Rejection(Reason.SCHEMA, str(exc), i, exc.where))
        return events, indices, rejections
    try:
        return [_event(doc, "")], [0], []
    except _Invalid as exc:
        return [], [], [Rejection(Reason.SCHEMA, str(exc), None, exc.where)]


def _report(doc: object) -> Report:
    if not isinstance(doc, dict):
        raise _Invalid("/", "must be an object")
    for key in ("report_id", "ts", "category", "source"):
        if key not in doc:
            raise _Invalid("/", f"missing required field {key!r}")
    report_id = _str(doc, "report_id", 1, 128, "")
    ts_ms = parse_ts(doc["ts"])
    zone_id = _opt_str(doc, "zone_id", 1, 64, "")
    lat = _num(doc, "lat", -90, 90, "") if "lat" in doc else None
    lon = _num(doc, "lon", -180, 180, "") if "lon" in doc else None
    if zone_id is None and (lat is None or lon is None):
        raise _Invalid("/", "needs 'zone_id', or both 'lat' and 'lon'")
    category = doc["category"]
    if not isinstance(category, str) or category not in REPORT_CATEGORIES:
        raise _Invalid("/category", f"must be one of {', '.join(sorted(REPORT_CATEGORIES))}")
    source = doc["source"]
    if not isinstance(source, str) or source not in REPORT_SOURCES:
        raise _Invalid("/source", f"must be one of {', '.join(sorted(REPORT_SOURCES))}")
    severity = _int(doc, "severity", 1, 5, "") if "severity" in doc else None
    text = _opt_str(doc, "text", 0, MAX_REPORT_TEXT, "")
    lang = doc.get("lang")
    if "lang" in doc and lang not in ("th", "en"):
        raise _Invalid("/lang", "must be 'th' or 'en'")
    return Report(report_id, ts_ms, category, source, zone_id, lat, lon, severity, text, lang)


def decode_json_object(value: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES
                       ) -> dict[str, Any] | Rejection:
    """One JSON object per message (internal topics): size, JSON, an object; or why not."""
    if value is None:
        return Rejection(Reason.NOT_JSON, "message has no value (tombstone)")
    if len(value) > max_bytes:
        return Rejection(Reason.TOO_LARGE, f"value is {len(value)} bytes")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejection(Reason.NOT_JSON, f"not UTF-8 JSON: {exc}")
    if not isinstance(doc, dict):
        return Rejection(Reason.SCHEMA, f"/: must be an object, got {type(doc).__name__}",
                         None, "/")
    return doc


def _decode_one(value: bytes | None, parse: Callable[[object], T]) -> T | Rejection:
    """One JSON object per message: size, JSON, then ``parse`` (raising ``_Invalid``)."""
    doc = decode_json_object(value)
    if isinstance(doc, Rejection):
        return doc
    try:
        return parse(doc)
    except _Invalid as exc:
        return Rejection(Reason.SCHEMA, str(exc), None, exc.where)


def positive_number(v: object) -> bool:
    """A finite number > 0 (YAML can spell .nan and .inf; neither is a size or a level)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        f = float(v)
    except OverflowError:  # an integer beyond any float
        return False
    return math.isfinite(f) and f > 0


def decode_report(value: bytes | None) -> Report | Rejection:
    """Decode and validate one message value of the reports topic."""
    return _decode_one(value, _report)


ACK_FIELDS = frozenset({"alert_id", "operator", "ts", "note", "zone_id"})
MAX_ACK_NOTE = 500


def _ack(doc: object) -> Ack:
    if not isinstance(doc, dict):
        raise _Invalid("/", "must be an object")
    for key in ("alert_id", "operator", "ts"):
        if key not in doc:
            raise _Invalid("/", f"missing required field {key!r}")
    extra = sorted(set(doc) - ACK_FIELDS)
    if extra:
        raise _Invalid("/", f"unknown field {extra[0]!r}")
    return Ack(
        alert_id=_str(doc, "alert_id", 1, 128, ""),
        operator=_str(doc, "operator", 1, 64, ""),
        ts_ms=parse_ts(doc["ts"]),
        note=_opt_str(doc, "note", 0, MAX_ACK_NOTE, "") or "",
        zone_id=_opt_str(doc, "zone_id", 1, 64, ""),
    )


def decode_ack(value: bytes | None) -> Ack | Rejection:
    """Decode and validate one message value of the acknowledgements topic."""
    return _decode_one(value, _ack)


def encode_ack(ack: Ack) -> bytes:
    doc: dict[str, Any] = {"alert_id": ack.alert_id, "operator": ack.operator,
                           "ts": format_ts(ack.ts_ms)}
    if ack.note:
        doc["note"] = ack.note
    if ack.zone_id:
        doc["zone_id"] = ack.zone_id
    return orjson.dumps(doc)


def format_ts(ts_ms: int, tz: timezone = UTC) -> str:
    """Epoch ms as RFC 3339 with millisecond precision (``Z`` for UTC)."""
    dt = _EPOCH + timedelta(milliseconds=ts_ms)
    dt = dt.astimezone(tz)
    s = dt.isoformat(timespec="milliseconds")
    return s.replace("+00:00", "Z")
