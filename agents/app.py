"""The Faust application: topics, agents and the web server of ``safetour worker``.

There is no module-level app: :func:`build_app` makes one from :class:`Settings`, so tests and
several workers in one process never share hidden state.

Ingest path: the sensor agent takes *batches* of raw messages (``take_events``), hands the
whole batch to :class:`streams.pipeline.Pipeline` (decode, validate, window, alert) and publishes
what it returns. Faust's per-message machinery is paid once per message, everything else once
per batch (see ``docs/perf-notes.md``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any, cast

import faust
import orjson
from faust.types import TP
from prometheus_client import generate_latest

from schemas import parse_ts
from streams.pipeline import Consumed, Outputs, OutRecord, Pipeline, SourceMessage

from .config import Settings
from .heartbeat import HeartbeatSnapshot, run_heartbeat
from .logs import ThrottledLog
from .metrics import Metrics
from .publish import BatchPublisher
from .state import Lineage, Snapshot, read_snapshots, start_offsets, write_snapshots
from .topics import DLQ_MAX_MESSAGE_BYTES
from .transport import BatchingTransport, RecordBatch
from .zones import follow_zone_topic

log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"


class SafetourApp(faust.App):
    """faust's App with the batching transport (``agents/transport.py``) for the topics in
    ``batch_topics``."""

    batch_topics: frozenset[str] = frozenset()

    def _new_transport(self) -> Any:
        return BatchingTransport(self.conf.broker_consumer, self)


def _sources_of(event: Any) -> Sequence[Consumed]:
    """The messages one faust event carries: a whole fetch (its aiokafka records, as they
    are) or one message."""
    value = event.value
    if isinstance(value, RecordBatch):
        return value
    return [_source(event)]


def _source(event: Any) -> SourceMessage:
    m = event.message
    ts = m.timestamp
    return SourceMessage(
        m.topic, m.partition, m.offset, None if ts is None else round(ts * 1000), m.key,
        m.value, tuple(m.headers or ()),
    )


def build_app(
    settings: Settings, pipeline: Pipeline | None = None, metrics: Metrics | None = None
) -> faust.App:
    zones = settings.load_registry()
    pipe = pipeline or settings.pipeline(zones)
    m = metrics or Metrics()
    datadir = settings.state_dir / "faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = SafetourApp(
        settings.app_id,
        # The broker URL and the connection's security: the client factory (agents/kafka.py).
        **settings.kafka.faust_kwargs(),
        store="memory://",
        autodiscover=False,
        datadir=str(datadir),
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        # DLQ records carry the original value (base64) and can exceed Kafka's 1 MiB default.
        producer_max_request_size=DLQ_MAX_MESSAGE_BYTES,
        consumer_auto_offset_reset="earliest",
        topic_partitions=8,
        topic_replication_factor=1,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 4, 1.0),
        # One fetch is one batch (agents/transport.py): let fetches be large.
        broker_max_poll_records=settings.batch_max,
        consumer_max_fetch_size=4 * 1024 * 1024,
        # Outputs go out in batches too; 5 ms of linger costs little latency.
        producer_linger_ms=5,
    )
    app.batch_topics = frozenset({settings.topics.sensor_events})

    def raw_topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")

    sensor_topic = raw_topic(settings.topics.sensor_events)
    alerts_topic = raw_topic(settings.topics.alerts)
    cap_topic = raw_topic(settings.topics.alerts_cap)
    density_topic = raw_topic(settings.topics.density)
    dlq_topic = raw_topic(settings.topics.dlq)

    batcher = BatchPublisher()
    # Bad input is counted in the metrics at once and logged at most every 10 s.
    dlq_log = ThrottledLog(log)

    async def publish(topic: Any, records: list[OutRecord]) -> None:
        # Straight to faust's producer, not Topic.send's per-message machinery: a batch can
        # hold thousands of density records (agents/publish.py). Delivery is still covered:
        # faust flushes this producer before it commits input offsets.
        if not records:
            return
        name = topic.get_topic_name()
        if len(records) >= 8:
            # faust keeps its aiokafka producer behind a private accessor; batches need it.
            await batcher.publish(cast(Any, app.producer)._ensure_producer(), name, records)
            return
        send = app.producer.send
        for r in records:
            await send(name, r.key, r.value, None, None, r.headers or None)

    async def publish_all(
        out: Outputs, topic: str = settings.topics.sensor_events, append_ms: int | None = None
    ) -> None:
        await publish(dlq_topic, out.dlq)
        await publish(density_topic, out.density)
        await publish(alerts_topic, out.alerts)
        await publish(cap_topic, out.cap)
        now = time.time()
        if out.density or out.alerts:
            m.last_output.set(now)
        if len(pipe.zones) <= settings.zone_metrics_max:
            for r in out.density:
                d = orjson.loads(r.value)
                if d["density"] is not None:
                    m.zone_density.labels(d["zone_id"]).set(d["density"])
        for kind, n in out.kinds.items():
            m.events_in.labels(topic, kind).inc(n)
        m.count_rejections(topic, out.rejected.items())
        m.duplicates.inc(out.duplicates)
        m.clamped.inc(out.clamped)
        for r in out.alerts:
            log.info("alert %s", r.value.decode())
            a = orjson.loads(r.value)
            m.alerts.labels(a["level"], a["status"], a.get("reason", "density")).inc()
            m.latency.labels("event").observe(max(now - parse_ts(a["ts"]) / 1000, 0))
            if append_ms is not None:
                m.latency.labels("append").observe(max(now - append_ms / 1000, 0))
        if out.rejected:
            dlq_log.add("dead-lettered (items by reason, since the last line)", out.rejected)

    # Recovery (agents/state.py): the next offset of every sensor partition this worker holds,
    # advanced together with the pipeline's state, and snapshotted with it.
    next_offset: dict[int, int] = {}
    restored: set[int] = set()
    last_snapshot = [time.monotonic()]
    unsnapshotted: set[int] = set()  # partitions processed since their last snapshot
    # The snapshot lineage (fencing epoch, seq, live snapshots) of each partition held.
    lineages: dict[int, Lineage] = {}

    async def send_state(key: bytes, value: bytes | None) -> None:
        # Returns once the broker has acknowledged the record (None: a tombstone).
        await app.producer.send_and_wait(settings.topics.state, key, value, None, None, None)

    async def take_snapshots(partitions: set[int]) -> None:
        held = sorted(partitions & set(next_offset) & set(lineages))
        snaps = [Snapshot(p, next_offset[p], pipe.snapshot(p)) for p in held]
        if snaps:
            await write_snapshots(send_state, settings.app_id, snaps, lineages)
        for snap in snaps:
            m.snapshots.inc()
            m.snapshot_bytes.labels(str(snap.partition)).set(len(snap.blob))
            unsnapshotted.discard(snap.partition)
        last_snapshot[0] = time.monotonic()

    async def ingest(stream: Any) -> None:
        # Each event is one partition's fetch (agents/transport.py), hundreds to thousands of
        # messages: decoded, windowed and published together.
        async for event in stream.events():
            sources = _sources_of(event)
            started = time.perf_counter()
            out = pipe.process_sensor_batch(sources, now_ms=int(time.time() * 1000))
            m.batch_seconds.observe(time.perf_counter() - started)
            m.batch_messages.observe(len(sources))
            for s in sources:
                next_offset[s.partition] = max(next_offset.get(s.partition, 0), s.offset + 1)
                unsnapshotted.add(s.partition)
            appended = [s.timestamp for s in sources if s.timestamp is not None]
            await publish_all(out, append_ms=max(appended) if appended else None)
            if time.monotonic() - last_snapshot[0] >= settings.snapshot_s:
                await take_snapshots(set(next_offset))

    app.agent(sensor_topic, name="safetour.sensor-ingest")(ingest)

    reports_topic = raw_topic(settings.topics.reports)

    async def reports(stream: Any) -> None:
        # Reports are few and urgent: published as soon as they arrive, no window to wait for.
        async for batch in stream.take_events(100, within=0.05):
            sources = [_source(e) for e in batch]
            appended = [s.timestamp for s in sources if s.timestamp is not None]
            out = pipe.process_report_batch(sources, now_ms=int(time.time() * 1000))
            await publish_all(out, settings.topics.reports,
                              max(appended) if appended else None)

    app.agent(reports_topic, name="safetour.reports")(reports)

    def sensor_partitions(tps: Any) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == settings.topics.sensor_events}

    async def on_revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        # Hand over a fresh snapshot, so the next owner replays as little as possible.
        gone = sensor_partitions(args[0] if args else kwargs.get("revoked", ()))
        try:
            await take_snapshots(gone)
        except Exception:
            # The previous complete snapshot stays readable: the next owner restores it.
            log.exception("partitions %s: hand-over snapshot failed", sorted(gone))
        for p in gone:
            next_offset.pop(p, None)
            restored.discard(p)
            lineages.pop(p, None)
            unsnapshotted.discard(p)

    async def on_rebalanced(
        sender: Any, *args: Any, signal: Any = None, **kwargs: Any
    ) -> None:
        # Runs just before faust seeks every partition to its committed offset: restore the
        # newest complete snapshot of each newly assigned partition and commit its offset, so
        # the seek resumes exactly where the restored state ends. No snapshot: start at the
        # first arrival of the last window + grace (SAFETOUR_START=recent) or at the oldest
        # retained offset (from-start).
        new = sensor_partitions(app.consumer.assignment()) - restored
        if not new:
            return
        found = await read_snapshots(settings.kafka, settings.topics.state,
                                     settings.app_id, new)
        now_ms = int(time.time() * 1000)
        offsets: dict[int, int] = {}
        for p in sorted(new):
            f = found.get(p)
            for ref, snap in f.candidates if f is not None else ():
                try:
                    zones = pipe.restore(snap.blob, now_ms)
                except Exception:
                    log.exception("partition %d: snapshot %s could not be restored; trying "
                                  "the one before it", p, ref.sid)
                    continue
                log.info("partition %d: restored %d zones from snapshot %s (epoch %d, seq %d); "
                         "resuming at offset %d", p, zones, ref.sid, ref.epoch, ref.seq,
                         snap.offset)
                offsets[p] = snap.offset
                break
            lineages[p] = Lineage.after(f)
        fresh = sorted(new - set(offsets))
        if fresh:
            recent = settings.start == "recent"
            since = now_ms - round((settings.window_s + settings.grace_s) * 1000)
            starts = await start_offsets(settings.kafka,
                                         settings.topics.sensor_events, fresh,
                                         since if recent else None)
            for p in fresh:
                offsets[p] = starts[p]
                if recent:
                    log.info("partition %d: no snapshot; starting at offset %d, the first "
                             "arrival of the last %.0f s (SAFETOUR_START=recent)", p, starts[p],
                             settings.window_s + settings.grace_s)
                else:
                    log.info("partition %d: no snapshot; replaying it from the start "
                             "(offset %d)", p, starts[p])
        tps = {TP(settings.topics.sensor_events, p): o for p, o in offsets.items()}
        # faust's public commit() takes only offsets it saw acked; _commit takes ours.
        await cast(Any, app.consumer)._commit(tps)
        # aiokafka's seek_to_committed skips a committed offset of 0 (the consumer would
        # stay at the old committed position and skip the replay): seek those ourselves.
        for tp, offset in tps.items():
            if offset == 0:
                await app.consumer.seek(tp, 0)
        for p, offset in offsets.items():
            # The state now stands for this offset. Snapshot it soon: the new epoch fences
            # the snapshots of any previous owner still writing late.
            next_offset[p] = offset
            unsnapshotted.add(p)
        restored.update(new)

    # mode's Signal.connect is typed for one receiver shape; these are the documented ones.
    app.on_partitions_revoked.connect(cast(Any, on_revoked))
    app.on_rebalance_complete.connect(cast(Any, on_rebalanced))

    async def wall_clock() -> None:
        # Quiet partitions: windows still close, so a silent zone does not freeze.
        await publish_all(pipe.tick(int(time.time() * 1000)))
        # A worker that went quiet after a burst still snapshots what it processed last.
        if unsnapshotted and time.monotonic() - last_snapshot[0] >= settings.snapshot_s:
            await take_snapshots(set(next_offset))

    app.timer(interval=max(settings.slide_s / 2, 0.5), name="safetour.wall-clock")(wall_clock)

    # Live registry: every worker reads the whole compacted zones topic (no consumer group)
    # and applies each record on top of the registry file; a null value deletes a zone.
    registry = {z.zone_id: z for z in zones}

    async def follow_zones() -> None:
        await follow_zone_topic(settings, registry, pipe, dlq_topic)

    app.task(follow_zones)

    async def gauges() -> None:
        # Lag and freshness, every few seconds: consumer lag from the log end offsets and
        # what this worker processed (faust's own Prometheus sensor has no lag gauge).
        assigned = [tp for tp in app.consumer.assignment()
                    if tp.topic == settings.topics.sensor_events]
        if assigned:
            ends = await app.consumer.highwaters(*assigned)
            for tp in assigned:
                done = next_offset.get(tp.partition)
                if done is not None and ends.get(tp) is not None:
                    m.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                        max(ends[tp] - done, 0))
                wm = pipe.engine.watermark(tp.partition)
                if wm is not None:
                    m.watermark_lag.labels(str(tp.partition)).set(time.time() - wm / 1000)
        m.zones.set(len(pipe.zones))
        m.stale_sensors.set(pipe.engine.stale_sensor_count())
        skewed = pipe.engine.skewed_sensors()
        m.skewed_sensors.set(len(skewed))
        m.max_clock_skew.set(max((abs(k) for _, k in skewed), default=0.0))
        m.ready.set(1 if is_ready() else 0)

    app.timer(interval=5.0, name="safetour.gauges")(gauges)

    # The dashboard and the rules tell a stalled or dead pipeline from a calm night by these.
    health_topic = raw_topic(settings.topics.health)
    worker_id = f"{settings.app_id}@{socket.gethostname()}:{os.getpid()}"

    def heartbeat_snapshot() -> HeartbeatSnapshot:
        parts = sorted(tp.partition for tp in app.consumer.assignment()
                       if tp.topic == settings.topics.sensor_events)
        return HeartbeatSnapshot(worker_id, parts, {p: pipe.engine.watermark(p) for p in parts})

    async def heartbeat() -> None:
        async def send(key: bytes, value: bytes) -> None:
            await health_topic.send(key=key, value=value)

        await run_heartbeat(send, 5.0, heartbeat_snapshot, asyncio.Event())

    app.task(heartbeat)

    def is_ready() -> bool:
        tps = {tp.partition for tp in app.consumer.assignment()
               if tp.topic == settings.topics.sensor_events}
        return bool(tps) and tps <= restored

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        """The process is alive and serving."""
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """Partitions assigned and their state recovered: the worker is doing its job."""
        tps = sorted(tp.partition for tp in app.consumer.assignment()
                     if tp.topic == settings.topics.sensor_events)
        ready = is_ready()
        body = {"ready": ready, "partitions": tps, "recovered": sorted(restored)}
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp takes the charset separately; the exposition format is UTF-8 text.
        return web.bytes(generate_latest(m.registry), content_type=METRICS_CONTENT_TYPE)

    return app
