"""The worker's state and its commit protocol, in one class (``safetour worker``).

The commit point is the recovery snapshot (``agents/worker/state.py``): a snapshot of partition
``p`` records ``next_offset[p]`` and the pipeline state that stands for it; a restart resumes there.
Faust's own offset commits do not matter for sensor partitions (``on_rebalanced`` overrides
them). The protocol, all of it in this class:

1. **One thing at a time.** Processing a fetch, queueing its outputs and advancing
   ``next_offset`` happen under one lock (:attr:`Worker.lock`); so do the wall-clock tick,
   reports, snapshots and revokes. A snapshot can never see a batch whose outputs are not
   queued, nor an offset that moved without its outputs.
2. **Every send is tracked.** Publishing returns the delivery futures
   (``agents/worker/publish.py``); :class:`Deliveries` (``agents/worker/deliveries.py``) keeps
   them. Too many pending: the next batch first awaits them (back-pressure).
3. **Snapshot only what the broker acknowledged.** Before a snapshot every pending delivery is
   awaited. A failed one is sent again with backoff, ``attempts`` times in all; if it still
   fails the worker logs one error line and exits with :data:`DELIVERY_FAILED_EXIT`, never
   writing a snapshot past it (the restart replays from the last snapshot: at least once).

Idleness (engine ``advance``): a partition moves on by wall time only if a recent end-offset
query (younger than ``idle_s``) showed it read to its log end. During a broker outage the
queries fail, nothing moves on, and readings that producers buffered arrive in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

import orjson
from faust.types import TP

from schemas import Kind, parse_ts
from streams import BEYOND_DENSITY_REASONS
from streams.lanes import Direct, Lanes
from streams.pipeline import Pipeline
from streams.records import Consumed, Outputs, OutRecord

from ..config import Settings
from ..heartbeat import HeartbeatSnapshot
from ..logs import ThrottledLog
from ..metrics import INDICATOR_STATUSES, Metrics
from .deliveries import Deliveries, DeliveryFailed
from .flights import RouteFlights
from .neighbours import StaleNeighbours
from .publish import BatchPublisher, RoutedSent, Sent
from .router import RouteError, ZoneRouter, committed_offsets, router_start_offsets
from .state import Lineage, Send, Snapshot, read_snapshots, start_offsets, write_snapshots
from .transport import source_of, sources_of

log = logging.getLogger(__name__)

DELIVERY_FAILED_EXIT = 75
"""Exit status of a worker that could not deliver an output (EX_TEMPFAIL: restart it)."""
STOP_WITHIN_S = 10.0
"""A stopping worker (SIGTERM, SIGINT) awaits its pending deliveries and writes its final
snapshot within this long (README "Guarantees")."""


SENSOR_KINDS = frozenset(k.wire for k in Kind)


class Worker:
    """Pipeline, metrics, offsets, snapshot lineages and pending deliveries of one worker,
    and the hooks faust calls (see the module docstring for the protocol).

    ``producer()``: the aiokafka producer outputs go to; ``send_state``: writes one state
    record and returns once it is acknowledged; ``consumer()``: faust's consumer (assignment,
    end offsets, commits, seeks); ``exit``: how the process ends when a delivery failed."""

    def __init__(
        self, settings: Settings, pipe: Pipeline, metrics: Metrics, *,
        producer: Callable[[], Any], send_state: Send, consumer: Callable[[], Any],
        exit: Callable[[int], None] = os._exit,
        deliveries: Deliveries | None = None, router: ZoneRouter | None = None,
        log_ends: Callable[[Sequence[TP]], Awaitable[dict[TP, int]]] | None = None,
        routing_lag: Callable[[], Awaitable[dict[int, int]]] | None = None,
        reset_probe: Callable[[], Awaitable[None]] | None = None,
        wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.pipe = pipe
        self.metrics = metrics
        self._producer = producer
        self._send_state = send_state
        self._consumer = consumer
        # Log ends for the idleness gate: a client of its own (faust's consumer answers from
        # its fetching thread, up to a second late under load), else faust's highwaters.
        self._log_ends = log_ends or (lambda tps: self._consumer().highwaters(*tps))
        # Per upstream (sensor) partition, the records not yet routed (None: not asked, every
        # lane may move). A lane moves on by wall time only while its upstream is routed to
        # its end: a router that is frozen or behind must not see its readings made late.
        self._routing_lag = routing_lag
        self._reset_probe = reset_probe  # a query failed: start the probe's client afresh
        self.upstream: tuple[float, frozenset[int]] | None = None
        self._exit = exit
        self._wall = wall
        self._mono = monotonic
        self.publisher = BatchPublisher()
        self.stale_neighbours = StaleNeighbours()  # spill-over paused: said, not silent
        self.deliveries = deliveries or Deliveries(self._resend)
        self.lock = asyncio.Lock()
        # One owner per zone: every reading and report is first re-keyed by zone onto the
        # by-zone topic (agents/worker/router.py), whose partitions this worker's state follows.
        # Each by-zone partition keeps one clock per upstream partition (streams/lanes.py).
        self.routed = settings.route_by_zone
        self.lanes: Lanes | Direct = Lanes(pipe) if self.routed else Direct(pipe)
        self.router = router or ZoneRouter(pipe.zones.values(), settings.topics)
        self._routed_zones = pipe.zones  # the registry the router was last given
        self.route_started: set[TP] = set()  # router input partitions whose start is settled
        # Recovery: the next offset of every partition held, advanced with the pipeline's
        # state (under the lock, with its outputs queued) and snapshotted with it.
        self.next_offset: dict[int, int] = {}
        self.restored: set[int] = set()
        self.unsnapshotted: set[int] = set()  # partitions processed since their last snapshot
        self.lineages: dict[int, Lineage] = {}  # fencing epoch, seq, live snapshots
        self.last_snapshot = monotonic()
        self.failed: DeliveryFailed | None = None
        # Idleness: per partition, (monotonic time a query was sent, the log end it found).
        self.ends: dict[int, tuple[float, int]] = {}
        self.dlq_log = ThrottledLog(log)
        self.probe_log = ThrottledLog(log)
        self.worker_id = f"{settings.app_id}@{socket.gethostname()}:{os.getpid()}"

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    # -- the ingest seam -------------------------------------------------------------------
    @property
    def ingested_topic(self) -> str:
        """The topic the ingest agent consumes and whose partitions the snapshots cover: the
        by-zone topic, where each zone lives on one partition whatever the producer did."""
        t = self.settings.topics
        return t.by_zone if self.routed else t.sensor_events

    @property
    def routed_topics(self) -> frozenset[str]:
        """The input topics the router re-keys by zone onto :attr:`ingested_topic`."""
        t = self.settings.topics
        return frozenset({t.sensor_events, t.reports})

    def drives(self, zone_id: str) -> bool:
        """Whether this worker holds the by-zone partition of ``zone_id`` now (its density
        records are this worker's own). False unless routed by zone: read straight from the
        sensor topic, a zone's readings may reach several workers."""
        router = self.router.router
        if not self.routed or router is None:
            return False
        return router.partition_of(zone_id) in self.restored

    def process_fetch(self, sources: Sequence[Consumed], now_ms: int) -> Outputs:
        """What one fetch of :attr:`ingested_topic` does to the pipeline."""
        return self.lanes.process(sources, now_ms)

    # -- the zone router -------------------------------------------------------------------
    async def route(self, stream: Any) -> None:
        """Router agent (sensor and reports topics): each fetch is re-keyed by zone and sent
        at once; faust hears it done (and may commit its offsets) only once the broker
        acknowledged all of it and every fetch before it (agents/worker/flights.py)."""
        manual = stream.noack()
        flights = self.route_flights(manual.ack)
        drain = asyncio.create_task(flights.drain())
        try:
            async for event in manual.events():
                await flights.submit(event, sources_of(event))
        except RouteError:  # the drainer gave up and stopped the worker already
            raise
        except Exception as exc:  # a fetch that can never be routed: stop, never hang on it
            self._fail(DeliveryFailed(f"routing a fetch failed: {exc!r}"))
            raise
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, RouteError):
                await drain

    def route_flights(self, ack: Callable[[Any], Awaitable[Any]]) -> RouteFlights:
        """The in-order acknowledgement of routed fetches, sending with this worker's
        producer and stopping it loudly when routing gives up."""
        d = self.deliveries

        def give_up(exc: RouteError) -> None:
            self._fail(DeliveryFailed(str(exc)))

        return RouteFlights(self._route_send, lambda part, recs: self.router.resend(
            self._producer(), part, recs), ack, on_fail=give_up, attempts=d.attempts,
            delay=d.delay, sleep=d.sleep)

    async def _route_send(self, sources: Sequence[Consumed]) -> list[RoutedSent]:
        if self._routed_zones is not self.pipe.zones:  # the live registry changed
            self.router.set_zones(self.pipe.zones.values())
            self._routed_zones = self.pipe.zones
        return await self.router.send_fetch(self._producer(), sources)

    async def _start_routes(self, consumer: Any) -> None:
        """Router input partitions with no committed offset start where SAFETOUR_START says
        (not at faust's ``earliest``: a week of input routed again): commit that offset
        before faust seeks to the committed ones."""
        tps = {tp for tp in consumer.assignment()
               if tp.topic in self.routed_topics and tp not in self.route_started}
        if not tps:
            return
        committed = await committed_offsets(self.settings, tps)
        starts: dict[TP, int] = {}
        for topic in sorted({tp.topic for tp in tps}):
            fresh = [tp.partition for tp in tps if tp.topic == topic and committed.get(tp) is None]
            if fresh:
                found = await router_start_offsets(self.settings, topic, fresh, self._now_ms())
                starts.update({TP(topic, p): o for p, o in found.items()})
        if starts:
            # faust then seeks to them (a committed 0 too: BatchingConsumer.seek_to_committed)
            await self._commit_offsets(starts)
        self.route_started |= tps

    # -- the commit protocol ---------------------------------------------------------------
    async def ingest_fetch(self, sources: Sequence[Consumed]) -> None:
        """Process one fetch, queue its outputs, advance the offsets; snapshot when due."""
        async with self.lock:
            # A fetch of a partition not (or no longer) held here: its new owner reads it.
            held = [s for s in sources if s.partition in self.restored]
            if not held:
                return
            started = time.perf_counter()
            out = self.process_fetch(held, self._now_ms())
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_messages.observe(len(held))
            appended = [s.timestamp for s in held if s.timestamp is not None]
            await self._publish(out, self.ingested_topic, max(appended) if appended else None)
            for s in held:
                self.next_offset[s.partition] = max(self.next_offset.get(s.partition, 0),
                                                    s.offset + 1)
                self.unsnapshotted.add(s.partition)
            if self._mono() - self.last_snapshot >= self.settings.snapshot_s:
                await self._snapshot(set(self.next_offset))

    async def ingest(self, stream: Any) -> None:
        # Each event is one partition's fetch (agents/worker/transport.py), hundreds to thousands of
        # messages: decoded, windowed and published together.
        async for event in stream.events():
            await self.ingest_fetch(sources_of(event))

    async def reports(self, stream: Any) -> None:
        """Reports agent when the worker reads its inputs itself (no router): few and urgent,
        published as soon as they arrive, no window to wait for."""
        async for batch in stream.take_events(100, within=0.05):
            sources = [source_of(e) for e in batch]
            appended = [s.timestamp for s in sources if s.timestamp is not None]
            async with self.lock:
                out = self.pipe.process_report_batch(sources, now_ms=self._now_ms())
                await self._publish(out, self.settings.topics.reports,
                                    max(appended) if appended else None)

    async def wall_clock(self) -> None:
        """Quiet partitions: windows still close, so a silent zone does not freeze; a worker
        that went quiet after a burst still snapshots what it processed last."""
        async with self.lock:
            out = self.lanes.tick(self._now_ms(), self.quiet_partitions(),
                                  self.quiet_upstream())
            await self._publish(out)
            if self.unsnapshotted and \
                    self._mono() - self.last_snapshot >= self.settings.snapshot_s:
                await self._snapshot(set(self.next_offset))

    async def snapshot(self, partitions: Iterable[int]) -> None:
        async with self.lock:
            await self._snapshot(set(partitions))

    async def _snapshot(self, partitions: set[int]) -> None:
        """Under the lock: await every pending delivery, then snapshot ``partitions``."""
        if self.failed is not None:
            raise self.failed
        await self._settle()
        held = sorted(partitions & set(self.next_offset) & set(self.lineages))
        snaps = [Snapshot(p, self.next_offset[p], self.lanes.snapshot(p)) for p in held]
        if snaps:
            await write_snapshots(self._send_state, self.settings.app_id, snaps, self.lineages)
        for snap in snaps:
            self.metrics.snapshots.inc()
            self.metrics.snapshot_bytes.labels(str(snap.partition)).set(len(snap.blob))
            self.unsnapshotted.discard(snap.partition)
        self.last_snapshot = self._mono()
        if snaps:
            await self._commit_offsets({TP(self.ingested_topic, s.partition): s.offset
                                        for s in snaps})

    async def _commit_offsets(self, offsets: dict[TP, int]) -> bool:
        """Commit offsets of our own: the snapshots' on the ingested topic (consumer-group
        lag and a restart follow them), a router input's start. A refused commit (a
        rebalance under way) leaves an older offset committed: a longer replay, never a
        gap."""
        # faust's public commit() takes only offsets it saw acked; _commit takes ours.
        ok = bool(await cast(Any, self._consumer())._commit(offsets))
        if not ok:
            log.info("committing %s was refused (a rebalance under way)",
                     sorted(f"{tp.topic}[{tp.partition}]" for tp in offsets))
        return ok

    async def _settle(self) -> None:
        try:
            await self.deliveries.settle()
        except DeliveryFailed as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: DeliveryFailed) -> None:
        """Stop loudly: one error line, no snapshot past the failure, a non-zero exit."""
        if self.failed is None:
            self.failed = exc
            log.critical("stopping: an output could not be delivered (%s); no snapshot is "
                         "written past it, a restart resumes from the last one", exc)
            for h in logging.getLogger().handlers:
                h.flush()
            self._exit(DELIVERY_FAILED_EXIT)

    async def _resend(self, sent: Sent) -> list[Sent]:
        return await self.publisher.resend(self._producer(), sent)

    async def _send(self, topic: str, records: list[OutRecord]) -> None:
        if records:
            sent = await self.publisher.publish(self._producer(), topic, records)
            try:
                await self.deliveries.add(sent)
            except DeliveryFailed as exc:
                self._fail(exc)
                raise

    async def _publish(
        self, out: Outputs, topic: str | None = None, append_ms: int | None = None
    ) -> None:
        """Queue a batch's outputs (tracked until acknowledged) and count them."""
        t = self.settings.topics
        await self._send(t.dlq, out.dlq)
        await self._send(t.density, out.density)
        await self._send(t.alerts, out.alerts)
        await self._send(t.alerts_cap, out.cap)
        self._count(out, topic or self.ingested_topic, append_ms)

    def _count(self, out: Outputs, topic: str, append_ms: int | None) -> None:
        m = self.metrics
        now = time.time()
        if out.density or out.alerts:
            m.last_output.set(now)
        if len(self.pipe.zones) <= self.settings.zone_metrics_max:
            for r in out.density:
                d = orjson.loads(r.value)
                if d["density"] is not None:
                    m.zone_density.labels(d["zone_id"]).set(d["density"])
                if d.get("hot_density") is not None:
                    m.zone_hot_cell_density.labels(d["zone_id"]).set(d["hot_density"])
                if d.get("outflow_per_m_s") is not None:
                    m.zone_outflow.labels(d["zone_id"]).set(d["outflow_per_m_s"])
                else:  # not measured now (its counter stopped): no value, not the last one
                    with contextlib.suppress(KeyError):
                        m.zone_outflow.remove(d["zone_id"])
        t = self.settings.topics
        for kind, n in out.kinds.items():
            # By the topic the integrator wrote to: readings by kind, reports by category.
            origin = topic if topic != self.ingested_topic else \
                t.sensor_events if kind in SENSOR_KINDS else t.reports
            m.events_in.labels(origin, kind).inc(n)
        m.count_rejections(t.sensor_events if topic == self.ingested_topic else topic,
                           out.rejected.items())
        m.duplicates.inc(out.duplicates)
        m.clamped.inc(out.clamped)
        for r in out.alerts:
            log.info("alert %s", r.value.decode())
            a = orjson.loads(r.value)
            m.alerts.labels(a["level"], a["status"], a.get("reason", "density")).inc()
            if (a.get("reason") in BEYOND_DENSITY_REASONS and a["status"] in INDICATOR_STATUSES
                    and not a.get("reminder")):
                m.indicator_alerts.labels(a["reason"]).inc()
            m.latency.labels("event").observe(max(now - parse_ts(a["ts"]) / 1000, 0))
            if append_ms is not None:
                m.latency.labels("append").observe(max(now - append_ms / 1000, 0))
        if out.rejected:
            self.dlq_log.add("dead-lettered (items by reason, since the last line)",
                             out.rejected)

    # -- idleness --------------------------------------------------------------------------
    @property
    def probe_every_s(self) -> float:
        """Pause between log-end queries (one query takes up to a second)."""
        return min(max(self.settings.idle_s / 2, 1.0), 5.0)

    @property
    def probe_fresh_s(self) -> float:
        """How young a log-end query must be to count: ``idle_s``, and at least two probe
        rounds (so a slow query never makes a quiet partition look held)."""
        return max(self.settings.idle_s, 2 * self.probe_every_s + 2.0)

    def quiet_partitions(self, now: float | None = None) -> set[int]:
        """Partitions that may move on by wall time: a recent query (see
        :attr:`probe_fresh_s`) found their log end at (or before) the offset read next."""
        now = self._mono() if now is None else now
        return {p for p, (at, end) in self.ends.items()
                if now - at < self.probe_fresh_s and p in self.next_offset
                and self.next_offset[p] >= end}

    def quiet_upstream(self, now: float | None = None) -> frozenset[int] | None:
        """Upstream partitions a recent query found routed to their end (None: every one,
        when the worker is not told about routing)."""
        if self._routing_lag is None:
            return None
        now = self._mono() if now is None else now
        if self.upstream is None or now - self.upstream[0] >= self.probe_fresh_s:
            return frozenset()
        return self.upstream[1]

    async def probe_loop(self) -> None:
        while True:
            await self.probe_ends()
            await asyncio.sleep(self.probe_every_s)

    async def probe_ends(self) -> None:
        """Ask the broker for the log ends of the partitions held (bounded by ``idle_s``):
        the idleness gate and the lag gauge read the answers."""
        tps = [TP(self.ingested_topic, p) for p in sorted(self.restored)]
        if not tps:
            return
        sent_at = self._mono()
        try:
            # An answer older than probe_fresh_s would not count: wait that long, no longer.
            ends = await asyncio.wait_for(self._log_ends(tps), timeout=self.probe_fresh_s)
        except Exception as exc:  # an outage (a timeout included): wait
            self.probe_log.note("log end queries failing (%s: %s): quiet partitions do not "
                                "move on by wall time", type(exc).__name__, exc)
            await self._probe_failed()
            return
        for tp, end in ends.items():
            if end is not None and tp.partition in self.restored:
                self.ends[tp.partition] = (sent_at, int(end))
        if self._routing_lag is not None:
            try:
                lag = await asyncio.wait_for(self._routing_lag(), timeout=self.probe_fresh_s)
            except Exception as exc:
                self.probe_log.note("routing lag queries failing (%s: %s): lanes do not move "
                                    "on by wall time", type(exc).__name__, exc)
                await self._probe_failed()
                return
            self.upstream = (sent_at, frozenset(u for u, n in lag.items() if n <= 0))

    async def _probe_failed(self) -> None:
        if self._reset_probe is not None:
            with contextlib.suppress(Exception):
                await self._reset_probe()

    # -- rebalances ------------------------------------------------------------------------
    def _ingested(self, tps: Iterable[Any]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == self.ingested_topic}

    async def on_revoked(self, sender: Any, *args: Any, signal: Any = None,
                         **kwargs: Any) -> None:
        """Hand over a fresh snapshot, then forget the partitions' zones at once."""
        revoked = set(args[0] if args else kwargs.get("revoked", ()))
        self.route_started -= revoked
        gone = self._ingested(revoked)
        if not gone:
            return
        async with self.lock:
            try:
                await self._snapshot(gone)
            except Exception:
                # The previous complete snapshot stays readable: the next owner restores it.
                log.exception("partitions %s: hand-over snapshot failed", sorted(gone))
            for p in gone:
                self.next_offset.pop(p, None)
                self.restored.discard(p)
                self.lineages.pop(p, None)
                self.unsnapshotted.discard(p)
                self.ends.pop(p, None)
                dropped = self.lanes.drop_partition(p)
                if dropped:
                    log.info("partition %d revoked: %d zones dropped", p, len(dropped))

    async def on_rebalanced(self, sender: Any, *args: Any, signal: Any = None,
                            **kwargs: Any) -> None:
        # Runs just before faust seeks every partition to its committed offset: restore the
        # newest complete snapshot of each newly assigned partition and commit its offset, so
        # the seek resumes exactly where the restored state ends. No snapshot: start at the
        # first arrival of the last window + grace (SAFETOUR_START=recent) or at the oldest
        # retained offset (from-start).
        consumer = self._consumer()
        if self.routed:
            await self._start_routes(consumer)
        new = self._ingested(consumer.assignment()) - self.restored
        if not new:
            return
        async with self.lock:
            offsets = await self._restore(new)
            tps = {TP(self.ingested_topic, p): o for p, o in offsets.items()}
            # faust seeks to them next (a committed 0 too: BatchingConsumer.seek_to_committed).
            await self._commit_offsets(tps)
            for p, offset in offsets.items():
                # The state now stands for this offset. Snapshot it soon: the new epoch
                # fences the snapshots of any previous owner still writing late.
                self.next_offset[p] = offset
                self.unsnapshotted.add(p)
            self.restored.update(new)

    async def _restore(self, new: set[int]) -> dict[int, int]:
        s = self.settings
        found = await read_snapshots(s.kafka, s.topics.state, s.app_id, new)
        now_ms = self._now_ms()
        offsets: dict[int, int] = {}
        for p in sorted(new):
            f = found.get(p)
            for ref, snap in f.candidates if f is not None else ():
                try:
                    zones, resumable = self.lanes.restore(snap.blob, now_ms)
                except Exception:
                    log.exception("partition %d: snapshot %s could not be restored; trying "
                                  "the one before it", p, ref.sid)
                    continue
                if not resumable:  # its offset is of the sensor topic: start afresh
                    break
                log.info("partition %d: restored %d zones from snapshot %s (epoch %d, seq %d); "
                         "resuming at offset %d", p, zones, ref.sid, ref.epoch, ref.seq,
                         snap.offset)
                offsets[p] = snap.offset
                break
            self.lineages[p] = Lineage.after(f)
        fresh = sorted(new - set(offsets))
        if fresh:
            recent = s.start == "recent"
            span = s.window_s + s.grace_s
            starts = await start_offsets(s.kafka, self.ingested_topic, fresh,
                                         now_ms - round(span * 1000) if recent else None)
            for p in fresh:
                offsets[p] = starts[p]
                if recent:
                    log.info("partition %d: no snapshot; starting at offset %d, the first "
                             "arrival of the last %.0f s (SAFETOUR_START=recent)", p,
                             starts[p], span)
                else:
                    log.info("partition %d: no snapshot; replaying it from the start "
                             "(offset %d)", p, starts[p])
        return offsets

    async def on_shutdown(self, sender: Any = None, **kwargs: Any) -> None:
        """The worker stops (SIGTERM, SIGINT; faust has stopped fetching): await the pending
        deliveries and write a final snapshot, within :data:`STOP_WITHIN_S`."""
        if self.failed is not None or not self.next_offset:
            return
        try:
            await asyncio.wait_for(self.snapshot(set(self.next_offset)), STOP_WITHIN_S)
        except Exception:  # stopping anyway; the previous snapshot stands
            log.exception("final snapshot not written; a restart resumes from the previous one")
            return
        log.info("stopped: outputs delivered, final snapshot of partitions %s written",
                 sorted(self.next_offset))

    # -- health ----------------------------------------------------------------------------
    def held(self) -> list[int]:
        return sorted(self._ingested(self._consumer().assignment()))

    def is_ready(self) -> bool:
        held = set(self.held())
        return bool(held) and held <= self.restored

    def readiness(self) -> dict[str, Any]:
        return {"ready": self.is_ready(), "partitions": self.held(),
                "recovered": sorted(self.restored)}

    def heartbeat_snapshot(self) -> HeartbeatSnapshot:
        parts = self.held()
        return HeartbeatSnapshot(self.worker_id, parts,
                                 {p: self.lanes.watermark(p) for p in parts})

    async def gauges(self) -> None:
        # Lag and freshness, every few seconds: consumer lag from the log end offsets the
        # idleness probe found and what this worker processed.
        m, engine = self.metrics, self.pipe.engine
        for p in self.held():
            done, end = self.next_offset.get(p), self.ends.get(p)
            if done is not None and end is not None:
                m.consumer_lag.labels(self.ingested_topic, str(p)).set(max(end[1] - done, 0))
            wm = self.lanes.watermark(p)
            if wm is not None:
                m.watermark_lag.labels(str(p)).set(time.time() - wm / 1000)
        m.zones.set(len(self.pipe.zones))
        if len(self.pipe.zones) <= self.settings.zone_metrics_max:
            for zone, neighbour, per_min in self.pipe.alerts.inflows():
                m.zone_inflow.labels(zone, neighbour).set(per_min)
        self.stale_neighbours.update(self.pipe.alerts, m)
        m.stale_sensors.set(engine.stale_sensor_count())
        skewed = engine.skewed_sensors()
        m.skewed_sensors.set(len(skewed))
        m.max_clock_skew.set(max((abs(k) for _, k in skewed), default=0.0))
        m.ready.set(1 if self.is_ready() else 0)
