"""The processing pipeline, free of any Kafka client: bytes in, records to publish out.

The faust worker and the offline replay both drive this class; it never talks to a broker.
For each batch of raw messages it decodes and validates (``schemas``), dead-letters what is bad
with a reason, feeds the good events to the density engine, and turns density updates into
alerts.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import numpy as np
import orjson

from schemas import (
    Reason,
    Rejection,
    SensorEvent,
    Zone,
    decode_report,
    decode_sensor_message,
    dlq_headers,
    dlq_record,
    encode_dlq_record,
    format_ts,
)

from .alarm import AlarmConfig
from .alerts import AlertTracker
from .cap import to_cap
from .density import WindowedDensityEngine
from .engine import DensityEngine, DensityUpdate

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
SNAPSHOT_FORMAT = 1


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


class SourceMessage(NamedTuple):
    """One consumed message, as any Kafka client can describe it (a :class:`Consumed`)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None  # epoch ms
    key: bytes | None
    value: bytes | None


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
    rejected: Counter[str] = field(default_factory=Counter)


def _num(x: float, digits: int) -> float | None:
    return None if math.isnan(x) else round(x, digits)


def density_record(u: DensityUpdate, fmt: Callable[[int], str] = format_ts) -> bytes:
    """A value on the density topic (keyed by zone_id); null numbers mean 'no data'."""
    return orjson.dumps({
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
    })


class Pipeline:
    def __init__(
        self,
        zones: Iterable[Zone],
        *,
        engine: DensityEngine | None = None,
        clock: Callable[[], datetime] | None = None,
        alarm: AlarmConfig | None = None,
    ) -> None:
        zone_list = list(zones)
        self.zones = {z.zone_id: z for z in zone_list}
        self.engine: DensityEngine = engine or WindowedDensityEngine(zone_list)
        self.alerts = AlertTracker(self.zones, alarm)
        self._clock = clock
        # Every zone's windows close on the same slide boundaries: format each one once.
        self._format_ts: Callable[[int], str] = functools.lru_cache(maxsize=4096)(format_ts)

    def set_zones(self, zones: Iterable[Zone]) -> None:
        zone_list = list(zones)
        self.zones = {z.zone_id: z for z in zone_list}
        self.engine.set_zones(zone_list)
        self.alerts.set_zones(self.zones)

    def _dead_letter(self, out: Outputs, msg: Consumed, rej: Rejection) -> None:
        now = self._clock() if self._clock else None
        rec = dlq_record(
            rej, value=msg.value, topic=msg.topic, partition=msg.partition, offset=msg.offset,
            timestamp_ms=msg.timestamp, key=msg.key, now=now,
        )
        out.dlq.append(OutRecord(
            msg.key, encode_dlq_record(rec), dlq_headers(rej, msg.topic, msg.partition, msg.offset)
        ))
        out.rejected[rej.reason.value] += 1

    def snapshot(self, partition: int) -> bytes:
        """Everything needed to resume ``partition`` exactly: the density state of the zones
        it drives and their open alert episodes, compressed (numpy ``.npz``, no pickles)."""
        snap = self.engine.snapshot(partition)
        alerts = self.alerts.export_state(snap["zone_ids"].tolist())
        snap["alerts_json"] = np.frombuffer(orjson.dumps(alerts), dtype=np.uint8)
        snap["format"] = np.array([SNAPSHOT_FORMAT], dtype=np.int64)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **snap)
        return zlib.compress(buf.getvalue(), 1)

    def restore(self, blob: bytes) -> int:
        """Put back a :meth:`snapshot`; return the number of zones restored."""
        with np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False) as f:
            snap = {k: f[k] for k in f.files}
        if int(snap.pop("format")[0]) != SNAPSHOT_FORMAT:
            log.warning("snapshot has an unknown format; ignored")
            return 0
        alerts = orjson.loads(snap.pop("alerts_json").tobytes())
        self.alerts.import_state(snap["zone_ids"].tolist(), alerts)
        return self.engine.restore(snap)

    def process_sensor_batch(
        self, messages: Sequence[Consumed], arrival_ms: int | None = None
    ) -> Outputs:
        """Decode, validate and window one batch. ``arrival_ms``: wall-clock arrival time
        (the worker passes it; offline replay does not, and stays in event time)."""
        out = Outputs()
        events: list[SensorEvent] = []
        origin: list[Consumed] = []  # the message each event came from
        for msg in messages:
            evs, rejections = decode_sensor_message(msg.value)
            for rej in rejections:
                self._dead_letter(out, msg, rej)
            events.extend(evs)
            origin.extend([msg] * len(evs))
        out.events_in = len(events)
        out.kinds.update(e.kind.wire for e in events)
        if events:
            position = {id(e): k for k, e in enumerate(events)}
            dup_before = self.engine.duplicates
            refused = self.engine.ingest(events, [m.partition for m in origin], arrival_ms)
            out.duplicates = self.engine.duplicates - dup_before
            for ev, rej in refused:
                msg = origin[position[id(ev)]]
                self._dead_letter(out, msg, replace(rej, detail=f"{ev.event_id}: {rej.detail}"))
        self._emit(out)
        return out

    def process_report_batch(
        self, messages: Sequence[Consumed], arrival_ms: int | None = None
    ) -> Outputs:
        """Human reports: each maps to a zone (by zone_id, or lat/lon inside a zone polygon)
        and may raise or corroborate an alert at once, without waiting for a window."""
        out = Outputs()
        for msg in messages:
            rep = decode_report(msg.value)
            if isinstance(rep, Rejection):
                self._dead_letter(out, msg, rep)
                continue
            zone_id = self.alerts.zone_for(rep)
            if zone_id is None:
                where = rep.zone_id or f"({rep.lat}, {rep.lon})"
                self._dead_letter(out, msg, Rejection(
                    Reason.UNKNOWN_ZONE, f"{rep.report_id}: no zone at {where}"))
                continue
            out.events_in += 1
            out.kinds[rep.category] += 1
            for alert in self.alerts.report(rep, zone_id, arrival_ms):
                self._alert(out, zone_id.encode(), alert)
        return out

    def tick(self, now_ms: int) -> Outputs:
        """Wall-clock progress (call every few seconds): windows of quiet partitions close."""
        out = Outputs()
        self.engine.advance(now_ms)
        self._emit(out)
        return out

    def finish(self) -> Outputs:
        """End of input (offline replay): close every open window."""
        out = Outputs()
        self.engine.finish()
        self._emit(out)
        return out

    def _alert(self, out: Outputs, key: bytes, alert: dict[str, Any]) -> None:
        out.alerts.append(OutRecord(key, orjson.dumps(alert), []))
        z = self.zones.get(alert["zone_id"])
        if z is not None:
            circle = z.extra.get("circle")  # optional [lat, lon, radius km] for zones
            xml = to_cap(alert, zone_names={"th": z.name_th, "en": z.name_en},
                         polygon=z.polygon,
                         circle=tuple(circle) if isinstance(circle, list) else None)
            out.cap.append(OutRecord(key, xml, [("content-type", b"application/cap+xml")]))

    def _emit(self, out: Outputs) -> None:
        fmt = self._format_ts
        for u in self.engine.emit():
            key = u.zone_id.encode()
            out.density.append(OutRecord(key, density_record(u, fmt), []))
            for alert in self.alerts.observe(u):
                self._alert(out, key, alert)
