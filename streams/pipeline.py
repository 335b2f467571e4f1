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
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from schemas import (
    Reason,
    Rejection,
    SensorEvent,
    Zone,
    decode_report,
    decode_sensor_items,
    dlq_headers,
    dlq_record,
    encode_dlq_record,
    format_ts,
)

from .alarm import AlarmConfig
from .alerts import AlertTracker
from .cap import zone_to_cap
from .clock import RobustClock
from .density import WindowedDensityEngine
from .engine import DensityEngine
from .levels import Level
from .records import (
    Consumed,
    Origin,
    Outputs,
    OutRecord,
    SourceMessage,
    density_record,
    read_origin,
    undecodable,
)
from .spillover import LineFlows, graph_counters

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
DEFAULT_MAX_SKEW_MS = 300_000
"""A reading or report stamped further ahead of its arrival than this is dead-lettered."""


def _renumber(text: str | None, old: str, new: str) -> str | None:
    if text is None or not text.startswith(old):
        return text
    rest = text[len(old):]
    return new + rest if rest == "" or rest[0] in "/: " else text


def _to_original(rejections: list[Rejection], items: Sequence[int] | None) -> list[Rejection]:
    """Rejections of a sub-batch, renumbered to its items' indices in the original message
    (index, pointer and the pointer a detail starts with)."""
    if items is None:
        return rejections
    out = []
    for r in rejections:
        i = r.index
        if i is None or not 0 <= i < len(items):
            out.append(r)
            continue
        old, new = f"/{i}", f"/{items[i]}"
        out.append(replace(r, index=items[i], pointer=_renumber(r.pointer, old, new),
                           detail=_renumber(r.detail, old, new) or r.detail))
    return out


def _arrival(msg: Consumed, now_ms: int | None) -> int | None:
    """When a message arrived: its broker timestamp (LogAppendTime, or the producer's
    CreateTime when that is all there is), never later than the wall clock."""
    ts = msg.timestamp
    if ts is None or ts <= 0:
        return now_ms
    return ts if now_ms is None else min(ts, now_ms)


class Pipeline:
    """Decode, validate, window and alert. ``clock`` stamps DLQ records (wall clock by
    default; replay passes an event-time clock); ``max_skew_ms`` is how far ahead of its
    arrival a reading or report may be stamped."""

    def __init__(
        self,
        zones: Iterable[Zone],
        *,
        engine: DensityEngine | None = None,
        clock: Callable[[], datetime] | None = None,
        alarm: AlarmConfig | None = None,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        exercise: bool = False,
    ) -> None:
        zone_list = list(zones)
        # A drill's pipeline (agents/cli.py drill): its own input topics; every alert it emits
        # carries "exercise": true and an alert_id of its own ("drill-" first).
        self.exercise = exercise
        self.flows = LineFlows()  # the zone graph's line counters (spill-over)
        self._index(zone_list)
        self.engine: DensityEngine = engine or WindowedDensityEngine(zone_list)
        self.alerts = AlertTracker(self.zones, alarm)
        self._clock = clock
        self.max_skew_ms = max_skew_ms
        # Offline (no arrival times): a robust clock per input partition (streams/clock.py).
        self._clocks: dict[tuple[str, int], RobustClock] = {}
        # Every zone's windows close on the same slide boundaries: format each one once.
        self._format_ts: Callable[[int], str] = functools.lru_cache(maxsize=4096)(format_ts)

    def set_zones(self, zones: Iterable[Zone]) -> None:
        zone_list = list(zones)
        self._index(zone_list)
        self.engine.set_zones(zone_list)
        self.alerts.set_zones(self.zones)

    def _index(self, zone_list: list[Zone]) -> None:
        self.zones = {z.zone_id: z for z in zone_list}
        self._owner = {s.sensor_id: z.zone_id for z in zone_list for s in z.sensors}
        # The zone graph's line counters (spill-over): their flows ride on the density
        # records of the zone that lists them as sensors.
        followed = graph_counters(zone_list)
        self.flows.forget(self.flows.sensors - followed)
        self.flows.sensors = followed
        self._graph_lines = {z.zone_id: lines for z in zone_list if (lines := tuple(
            s.sensor_id for s in z.sensors if s.sensor_id in followed))}

    def _dead_letter(self, out: Outputs, msg: Consumed, rejections: list[Rejection]) -> None:
        """One DLQ record for ``msg``, listing all its rejected items."""
        rejections.sort(key=lambda r: -1 if r.index is None else r.index)
        now = self._clock() if self._clock else None
        rec = dlq_record(
            rejections, value=msg.value, topic=msg.topic, partition=msg.partition,
            offset=msg.offset, timestamp_ms=msg.timestamp, key=msg.key, now=now,
        )
        out.dlq.append(OutRecord(
            msg.key, encode_dlq_record(rec),
            dlq_headers(rejections[0], msg.topic, msg.partition, msg.offset)))
        for r in rejections:
            out.rejected[r.reason.value] += 1

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

    def restore(self, blob: bytes, now_ms: int | None = None, *, density: bool = True) -> int:
        """Put back a :meth:`snapshot`; return the number of zones whose density state was
        restored. ``now_ms``: the wall clock, which a snapshot's clocks may not run ahead of
        (see the engine).

        The open alert episodes are carried over even when the density state cannot be
        (another snapshot format, window or grace: an upgrade), so an episode is never
        dropped silently: the next alert of the zone continues it (same ``alert_id``)."""
        with np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False) as f:
            snap = {k: f[k] for k in f.files}
        fmt = int(snap.pop("format")[0]) if "format" in snap else None
        raw = snap.pop("alerts_json", None)
        alerts: Any = orjson.loads(raw.tobytes()) if raw is not None else {}
        if not isinstance(alerts, dict):
            alerts = {}
        zone_ids = [str(z) for z in snap["zone_ids"].tolist()] if "zone_ids" in snap else []
        restored = 0
        if not density:  # only the episodes (a snapshot whose windows are of other input)
            pass
        elif fmt == SNAPSHOT_FORMAT:
            restored = self.engine.restore(snap, now_ms)
        else:
            log.warning("snapshot has format %s (this version reads %d); its density state "
                        "is not restored", fmt, SNAPSHOT_FORMAT)
        carried = self._carry_over(zone_ids or list(alerts), alerts, now_ms)
        if restored < len(zone_ids) and carried:
            log.warning("density state of %d of %d zones not restored; open alert episodes "
                        "carried over: %s", len(zone_ids) - restored, len(zone_ids),
                        ", ".join(carried))
        return restored

    def _carry_over(
        self, zone_ids: Sequence[str], alerts: dict[str, Any], now_ms: int | None
    ) -> list[str]:
        """Import the alert state of ``zone_ids`` (independent of the window settings);
        return the open episodes, as ``zone (level, seq n)``. A zone whose state is stamped
        ahead of the wall clock (a poisoned snapshot) starts afresh."""
        ok: dict[str, Any] = {}
        for zid in zone_ids:
            st = alerts.get(zid)
            if not isinstance(st, dict):
                continue
            stamps = [st.get(k) for k in ("episode_start_ms", "last_sent_ms", "clock_ms")]
            if now_ms is not None and any(
                    isinstance(t, int) and t > now_ms + self.max_skew_ms for t in stamps):
                log.warning("zone %r: alert state stamped ahead of the wall clock; dropped", zid)
                continue
            ok[zid] = st
        try:
            self.alerts.import_state(list(ok), ok)
        except (KeyError, TypeError, ValueError):
            log.exception("alert state of the snapshot could not be read; not carried over")
            return []
        return [f"{z} ({Level(int(st['level'])).name.lower()}, seq {st.get('seq', 0)})"
                for z, st in ok.items() if z in self.zones and int(st["level"]) > 0]

    def _votes(self, ev: SensorEvent) -> bool:
        """Only the registry's own sensors vote on the offline clock: a sender that invents
        sensor ids cannot outvote them."""
        return self._owner.get(ev.sensor_id) == ev.zone_id

    def _offline_clocks(
        self, decoded: Sequence[tuple[Consumed, list[SensorEvent]]]
    ) -> dict[tuple[str, int], RobustClock]:
        """The robust clocks of the batch's input partitions that have no arrival times,
        each seeded with the batch's own opinion (streams/clock.py)."""
        readings: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for msg, evs in decoded:
            if _arrival(msg, None) is None:
                readings.setdefault((msg.topic, msg.partition), []).extend(
                    (e.sensor_id, e.ts_ms) for e in evs if self._votes(e))
        clocks = {}
        for key, votes in readings.items():
            clk = self._clocks.get(key)
            if clk is None:
                clk = self._clocks[key] = RobustClock()
            first = RobustClock.opinion(votes)
            if first is not None:
                clk.seed(first)
            clocks[key] = clk
        return clocks

    def process_sensor_batch(
        self, messages: Sequence[Consumed], now_ms: int | None = None,
        *, origins: Sequence[Origin] | None = None,
    ) -> Outputs:
        """Decode, validate and window one batch. ``now_ms``: the wall clock, live (the
        worker passes it; offline replay does not, and stays in event time). ``origins``
        (by-zone input, :meth:`process_routed_batch`): what each message stands for, the
        source that arrival and DLQ records name; the engine partition stays the message's
        own."""
        out = Outputs()
        events: list[SensorEvent] = []
        arrivals: list[int] = []
        ev_msg: list[int] = []  # the message each event came from
        ev_item: list[int | None] = []  # ... and its item index there (None: not a batch)
        rejected: dict[int, list[Rejection]] = {}
        skew = self.max_skew_ms
        decoded: list[tuple[Consumed, list[SensorEvent], list[int], list[Rejection]]] = []
        srcs = [o.message for o in origins] if origins is not None else messages
        for msg, src in zip(messages, srcs, strict=True):
            broken = undecodable(src)
            if broken is not None:
                decoded.append((msg, [], [], [Rejection(Reason.UNDECODABLE, broken)]))
            else:
                decoded.append((msg, *decode_sensor_items(msg.value)))
        clocks = (self._offline_clocks([(m, evs) for m, evs, _, _ in decoded])
                  if now_ms is None else {})
        for k, (msg, evs, items, rejs) in enumerate(decoded):
            if rejs:
                rejected[k] = rejs
            if not evs:
                continue
            batch_msg = msg.value is not None and msg.value.lstrip()[:1] == b"["
            arrival = _arrival(srcs[k], now_ms)
            offline = clocks.get((msg.topic, msg.partition)) if arrival is None else None
            ref = arrival if offline is None else offline.now()
            accepted: list[tuple[str, int]] = []
            for ev, item in zip(evs, items, strict=True):
                if ref is not None and ev.ts_ms > ref + skew:
                    where = f"/{item}/ts" if batch_msg else "/ts"
                    rejected.setdefault(k, []).append(Rejection(
                        Reason.FUTURE, f"{ev.event_id}: stamped {(ev.ts_ms - ref) // 1000} s "
                        f"ahead of its arrival (at most {skew // 1000} s allowed)",
                        item if batch_msg else None, where))
                    continue
                events.append(ev)
                arrivals.append(ev.ts_ms if ref is None else ref)
                ev_msg.append(k)
                ev_item.append(item if batch_msg else None)
                if self._votes(ev):
                    accepted.append((ev.sensor_id, ev.ts_ms))
            if offline is not None:
                offline.observe(accepted)
        out.events_in = len(events)
        out.kinds.update(e.kind.wire for e in events)
        if events:
            dup_before = self.engine.duplicates
            clamped_before = self.engine.clamped
            refused = self.engine.ingest(events, [messages[k].partition for k in ev_msg],
                                         now_ms, arrivals)
            if self.flows.sensors:
                gone = {i for i, _ in refused}
                self.flows.add(e for i, e in enumerate(events) if i not in gone)
            out.duplicates = self.engine.duplicates - dup_before
            out.clamped = self.engine.clamped - clamped_before
            for i, rej in refused:
                pos = ev_item[i]
                at = None if pos is None else f"/{pos}"
                ptr = rej.pointer if at is None else at + (rej.pointer or "")
                rejected.setdefault(ev_msg[i], []).append(replace(rej, index=pos, pointer=ptr))
        for k, rejs in rejected.items():
            self._dead_letter(out, srcs[k], _to_original(
                rejs, origins[k].items if origins is not None else None))
        self._emit(out)
        self._expire(out)
        return out

    def world_clock(self) -> int | None:
        """Event time of the world as the engine sees it (its partitions' clocks), if any."""
        return self.engine.clock_ms()

    def process_report_batch(
        self, messages: Sequence[Consumed], now_ms: int | None = None,
        *, origins: Sequence[Origin] | None = None,
    ) -> Outputs:
        """Human reports: each maps to a zone (by zone_id, or lat/lon inside a zone polygon)
        and acts at once: it may raise or corroborate an alert without waiting for a window.
        Stamped far in the future, or too old to matter, it is dead-lettered. ``origins``:
        as for :meth:`process_sensor_batch` (arrival and DLQ provenance)."""
        out = Outputs()
        hold = round(self.alerts.config.report_hold_s * 1000)
        srcs = [o.message for o in origins] if origins is not None else messages
        for msg in srcs:
            broken = undecodable(msg)
            if broken is not None:
                self._dead_letter(out, msg, [Rejection(Reason.UNDECODABLE, broken)])
                continue
            rep = decode_report(msg.value)
            if isinstance(rep, Rejection):
                self._dead_letter(out, msg, [rep])
                continue
            zone_id = self.alerts.zone_for(rep)
            if zone_id is None:
                where = rep.zone_id or f"({rep.lat}, {rep.lon})"
                self._dead_letter(out, msg, [Rejection(
                    Reason.UNKNOWN_ZONE, f"{rep.report_id}: no zone at {where}", None,
                    "/zone_id" if rep.zone_id else "/lat")])
                continue
            world = self.world_clock()
            arrival = _arrival(msg, now_ms)
            ref = arrival if arrival is not None else world
            if ref is not None and rep.ts_ms > ref + self.max_skew_ms:
                self._dead_letter(out, msg, [Rejection(
                    Reason.FUTURE, f"{rep.report_id}: stamped {(rep.ts_ms - ref) // 1000} s "
                    f"ahead of its arrival", None, "/ts")])
                continue
            # Too old to matter: its hold would be over by the zone's own clock (event time of
            # its windows or of its partition). A zone with sensors not seen yet (a backlog
            # being read) has no clock to judge by: the report acts. A zone without sensors
            # lives by the world's clock, else by the report's arrival.
            zone_now = self.alerts.zone_clock(zone_id)
            if zone_now is None:
                zone_now = self.engine.zone_clock_ms(zone_id)
            if zone_now is None and not self.zones[zone_id].sensors:
                zone_now = world if world is not None else arrival
            if zone_now is not None and rep.ts_ms + hold <= zone_now:
                self._dead_letter(out, msg, [Rejection(
                    Reason.STALE, f"{rep.report_id}: written {(zone_now - rep.ts_ms) // 1000} s "
                    f"before the zone's clock; a report holds for {hold // 1000} s", None,
                    "/ts")])
                continue
            out.events_in += 1
            out.kinds[rep.category] += 1
            for alert in self.alerts.report(rep, zone_id):
                self._alert(out, zone_id.encode(), alert)
        return out

    def tick(self, now_ms: int, partitions: Iterable[int] | None = None) -> Outputs:
        """Wall-clock progress (call every few seconds): windows of quiet partitions close,
        and report floors of blind or sensorless zones expire (by the world's clock, else
        the wall clock). ``partitions``: only these partitions may move on by wall time (the
        worker's truly quiet ones); None: all of them."""
        out = Outputs()
        self.engine.advance(now_ms, partitions)
        self._emit(out)
        self._expire(out, fallback_ms=now_ms)
        return out

    def drop_partition(self, partition: int) -> list[str]:
        """This worker no longer owns ``partition``: forget the zones whose home partition it
        is (windows, timers, alarm and episode state), so it never publishes for them again.
        Returns those zones."""
        dropped = self.engine.drop_partition(partition)
        if dropped:
            # The tracker's public way to forget zones: leave them out, then put them back
            # fresh (a revoke is rare; this visits the registry once).
            gone = set(dropped)
            self.alerts.set_zones({z: v for z, v in self.zones.items() if z not in gone})
            self.alerts.set_zones(self.zones)
        return dropped

    def finish(self) -> Outputs:
        """End of input (offline replay): close every open window."""
        out = Outputs()
        self.engine.finish()
        self._emit(out)
        self._expire(out)
        return out

    def _expire(self, out: Outputs, fallback_ms: int | None = None) -> None:
        """Zones that get no windows (blind, or without sensors) still live in time: their
        report floors expire and open blind episodes are re-alarmed by the world clock."""
        world = self.world_clock()
        default = world if world is not None else fallback_ms
        zone_clock = self.engine.zone_clock_ms

        def clock_of(zone_id: str) -> int | None:
            own = zone_clock(zone_id)
            return own if own is not None else default

        for zone_id, alert in self.alerts.tick(clock_of):
            self._alert(out, zone_id.encode(), alert)

    def _alert(self, out: Outputs, key: bytes, alert: dict[str, Any]) -> None:
        if self.exercise:
            alert = alert | {"exercise": True, "alert_id": f"drill-{alert['alert_id']}"}
        out.alerts.append(OutRecord(key, orjson.dumps(alert), []))
        z = self.zones.get(alert["zone_id"])
        if z is not None:
            xml = zone_to_cap(alert, z)
            out.cap.append(OutRecord(key, xml, [("content-type", b"application/cap+xml")]))

    def _emit(self, out: Outputs) -> None:
        fmt = self._format_ts
        lines = self._graph_lines
        for w in self.engine.emit():
            u = w if w.zone_id not in lines else w._replace(line_flows=self.flows.window(
                lines[w.zone_id], w.window_start_ms, w.window_end_ms))
            key = u.zone_id.encode()
            out.density.append(OutRecord(key, density_record(u, fmt), []))
            for alert in self.alerts.observe(u):
                self._alert(out, key, alert)

    def process_routed_batch(
        self, messages: Sequence[Consumed], now_ms: int | None = None, *,
        lane_width: int | None = None, origins: Sequence[Origin] | None = None,
    ) -> Outputs:
        """One fetch of the internal by-zone topic (streams/route.py): sensor messages and
        reports of the zones of one partition, in order. Each run of sensor records goes
        through :meth:`process_sensor_batch`, each run of reports through
        :meth:`process_report_batch`, in order; the by-zone partition is the state partition
        (engine partition, clocks, snapshots), while arrival and DLQ provenance come from
        each record's origin (:func:`read_origin`): a DLQ record names the message the
        integrator sent, and a rejected item of a split batch its index there. The outputs
        are those of the two paths, concatenated in input order.

        ``lane_width`` (the worker, streams/lanes.py): each sensor record is windowed on the
        *lane* ``partition * lane_width + origin partition % lane_width``, a clock of its own
        per upstream partition, so a router that lags another makes no reading late.
        ``origins``: :func:`read_origin` of each message, if the caller has read them."""
        out = Outputs()
        if origins is None:
            origins = [read_origin(m) for m in messages]
        if lane_width is not None:
            messages = [SourceMessage(m.topic, m.partition * lane_width
                                      + o.message.partition % lane_width, m.offset,
                                      m.timestamp, m.key, m.value, tuple(m.headers or ()))
                        if o.kind == "sensor" else m for m, o in zip(messages, origins,
                                                                      strict=True)]
        start = 0
        while start < len(messages):
            kind = origins[start].kind
            end = start + 1
            while end < len(messages) and origins[end].kind == kind:
                end += 1
            run, run_origins = messages[start:end], origins[start:end]
            part = (self.process_report_batch(run, now_ms, origins=run_origins)
                    if kind == "report" else
                    self.process_sensor_batch(run, now_ms, origins=run_origins))
            _merge(out, part)
            start = end
        return out


def _merge(into: Outputs, part: Outputs) -> None:
    into.alerts.extend(part.alerts)
    into.cap.extend(part.cap)
    into.density.extend(part.density)
    into.dlq.extend(part.dlq)
    into.events_in += part.events_in
    into.kinds.update(part.kinds)
    into.duplicates += part.duplicates
    into.rejected.update(part.rejected)
    into.clamped += part.clamped
