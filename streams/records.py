"""The records the pipeline reads and writes, free of any Kafka client.

What a consumed message must offer (:class:`Consumed`, which aiokafka's ``ConsumerRecord``
satisfies, or a :class:`SourceMessage`), where a routed record came from (its origin header),
the sentinel of a record batch the client could not decode, and the output records
(:class:`Outputs`, :func:`density_record`, the density topic's value).
"""

from __future__ import annotations

import base64
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import orjson

from schemas import format_ts

from .engine import DensityUpdate

Headers = list[tuple[str, bytes]]
UNDECODABLE_HEADER = "safetour-undecodable"
UNDECODABLE_OFFSETS_HEADER = "safetour-undecodable-offsets"
ORIGIN_HEADER = "safetour-origin"
"""On the internal by-zone topic (streams/route.py): the message a record was routed from."""
ITEMS_HEADER = "safetour-items"
"""On a sub-batch split off a gateway batch: its items' indices in the original message."""


class Consumed(Protocol):
    """What the pipeline reads of a consumed message: aiokafka's ``ConsumerRecord`` has
    these attributes, so a fetch's records go in as they are (no copy per message)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...  # epoch ms (broker or producer time)
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class SourceMessage(NamedTuple):
    """One consumed message, as any Kafka client can describe it (a :class:`Consumed`)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None  # epoch ms
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


class Origin(NamedTuple):
    """What a record of the by-zone topic stands for (:func:`read_origin`): its kind
    (``sensor`` or ``report``), the original message (topic, partition, offset, arrival, key
    and headers; the value is the routed one) and, for a sub-batch of a split gateway batch,
    each item's index in the original message."""

    kind: str
    message: Consumed
    items: tuple[int, ...] | None = None


def _b64(v: bytes | None) -> str | None:
    return None if v is None else base64.b64encode(v).decode("ascii")


def origin_header(kind: str, msg: Consumed) -> tuple[str, bytes]:
    """The :data:`ORIGIN_HEADER` of a record routed from ``msg`` (the router writes it)."""
    return ORIGIN_HEADER, orjson.dumps({
        "kind": kind, "topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
        "timestamp": msg.timestamp, "key_b64": _b64(msg.key),
        "headers": [[k, _b64(v)] for k, v in msg.headers or ()],
    })


def _unb64(v: object) -> bytes | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError("not base64 text")
    return base64.b64decode(v, validate=True)


def read_origin(msg: Consumed) -> Origin:
    """The origin of a by-zone record. A record without a readable origin (written there by
    hand, or by another program) stands for itself, as a sensor message."""
    raw = items = None
    for k, v in msg.headers or ():
        if k == ORIGIN_HEADER:
            raw = v
        elif k == ITEMS_HEADER:
            items = v
    if raw is None:
        return Origin("sensor", msg)
    try:
        o = orjson.loads(raw)
        kind, topic, part, off, ts = (o["kind"], o["topic"], o["partition"], o["offset"],
                                      o["timestamp"])
        if kind not in ("sensor", "report") or not isinstance(topic, str) or \
                not all(isinstance(x, int) for x in (part, off)) or \
                not (ts is None or isinstance(ts, int)):
            raise ValueError("bad origin fields")
        headers = tuple((str(h), _unb64(b)) for h, b in o["headers"])
        idx: tuple[int, ...] | None = None
        if items is not None:
            idx = tuple(orjson.loads(items))
            if not all(isinstance(i, int) for i in idx):
                raise ValueError("bad item indices")
        src = SourceMessage(topic, part, off, ts, _unb64(o["key_b64"]), msg.value,
                            headers)  # type: ignore[arg-type]  # a null header value
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return Origin("sensor", msg)
    return Origin(kind, src, idx)


class OutRecord(NamedTuple):
    key: bytes | None
    value: bytes
    headers: Headers


@dataclass(slots=True)
class Outputs:
    """What one batch produces, per destination topic, plus counters for metrics."""

    alerts: list[OutRecord] = field(default_factory=list)
    cap: list[OutRecord] = field(default_factory=list)  # the same alerts as CAP 1.2 XML
    density: list[OutRecord] = field(default_factory=list)
    dlq: list[OutRecord] = field(default_factory=list)
    events_in: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # decoded inputs by kind/category
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # rejected items by reason
    clamped: int = 0  # readings counted at arrival + lead (their clocks run far ahead)


def _num(x: float, digits: int) -> float | None:
    # float(): values from the kernels' arrays are numpy scalars when the kernels run as
    # Python (NUMBA_DISABLE_JIT=1), and orjson writes only Python numbers.
    return None if math.isnan(x) else round(float(x), digits)


def density_record(u: DensityUpdate, fmt: Callable[[int], str] = format_ts) -> bytes:
    """A value on the density topic (keyed by zone_id); null numbers mean 'no data'."""
    doc: dict[str, Any] = {
        "zone_id": u.zone_id,
        "window_start": fmt(u.window_start_ms),
        "window_end": fmt(u.window_end_ms),
        "occupancy": _num(u.occupancy, 2),
        "density": _num(u.density, 4),
        "trend_per_min": _num(u.trend_per_min, 4),
        "flow_per_min": round(u.flow_per_min, 2),
        "freshness_s": None if u.freshness_ms < 0 else u.freshness_ms / 1000,
        "source": u.source,
        "readings": u.readings,
        "sensors": list(u.sensors),
        "stale_sensors": list(u.stale_sensors),
        "skewed_sensors": [{"sensor_id": s, "skew_s": k} for s, k in u.skewed_sensors],
        "confidence": _num(u.confidence, 3),
        # Issue 16 (optional): line counters' outflow and counter-flow.
        "outflow_per_min": round(float(u.outflow_per_min), 2),
        "outflow_per_m_s": _num(u.outflow_per_m_s, 3),
        "counterflow_per_m_min": _num(u.counterflow_per_m_min, 2),
        "counterflow_balance": _num(u.counterflow_balance, 3),
    }
    if u.cells:  # a zone with a grid: its hot spot and heat map
        doc |= {"hot_cell": u.hot_cell, "hot_density": _num(u.hot_density, 4),
                "cells": [_num(d, 4) for d in u.cells]}
    if u.line_flows:  # zone-graph line counters (streams/spillover.py): optional
        doc["line_flows"] = [{"sensor_id": s, "entries_per_min": round(a, 2),
                              "exits_per_min": round(b, 2)} for s, a, b in u.line_flows]
    return orjson.dumps(doc)


def undecodable(msg: Consumed) -> str | None:
    """The error text if ``msg`` stands for a record batch the Kafka client could not
    decode (a sentinel of ``agents/kafka_safety.py``), else None."""
    if msg.value is not None:
        return None
    found: dict[str, bytes] = {}
    for k, v in msg.headers or ():
        if k in (UNDECODABLE_HEADER, UNDECODABLE_OFFSETS_HEADER):
            found[k] = v
    if UNDECODABLE_HEADER not in found:
        return None
    error = found[UNDECODABLE_HEADER].decode("ascii", "replace")
    offsets = found.get(UNDECODABLE_OFFSETS_HEADER, b"").decode("ascii", "replace")
    return f"record batch at offsets {offsets or msg.offset} could not be decoded: {error}"
