"""The Faust application: topics, agents and the web server of ``safetour worker``.

There is no module-level app: :func:`build_app` makes one from :class:`Settings`, so tests and
several workers in one process never share hidden state.

Ingest path: the sensor agent takes *batches* of raw messages (``take_events``), hands the
whole batch to :class:`streams.pipeline.Pipeline` (decode, validate, window, alert) and publishes
what it returns. Faust's per-message machinery is paid once per message, everything else once
per batch (see ``docs/perf-notes.md``). The worker's state and its commit protocol (what a
snapshot may record, deliveries, idleness) are :class:`agents.worker.worker.Worker`; this module
wires it into faust.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import faust
from aiokafka import TopicPartition
from faust.types import TP
from prometheus_client import generate_latest

from streams.pipeline import Pipeline
from streams.warmup import warm_up

from ..config import Settings
from ..heartbeat import run_heartbeat
from ..metrics import Metrics
from ..topics import DLQ_MAX_MESSAGE_BYTES
from .neighbours import follow_neighbours
from .transport import BatchingTransport
from .worker import Worker
from .zones import follow_zone_topic

log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"


class SafetourApp(faust.App):
    """faust's App with the batching transport (``agents/worker/transport.py``) for the topics in
    ``batch_topics``."""

    batch_topics: frozenset[str] = frozenset()
    worker: Worker | None = None  # the worker's state and commit protocol (agents/worker/worker.py)

    def _new_transport(self) -> Any:
        return BatchingTransport(self.conf.broker_consumer, self)


def warm_kernels() -> float:
    """Compile (or load from numba's cache) the kernels before joining the group, so a
    fresh install's first fetch does not spend ~20 s compiling on the event loop
    (streams/warmup.py); returns seconds."""
    log.info("loading the numba kernels (compiled once after an install, ~20 s)")
    seconds = warm_up()
    log.info("numba kernels ready in %.1f s", seconds)
    return seconds


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
        # One fetch is one batch (agents/worker/transport.py): let fetches be large.
        broker_max_poll_records=settings.batch_max,
        consumer_max_fetch_size=4 * 1024 * 1024,
        # Outputs go out in batches too; 5 ms of linger costs little latency.
        producer_linger_ms=5,
    )
    t = settings.topics
    # Every fetch of these is one event (agents/worker/transport.py): routed or ingested whole.
    app.batch_topics = frozenset({t.sensor_events, t.reports, t.by_zone}
                                 if settings.route_by_zone else {t.sensor_events})

    def raw_topic(name: str, *, acks: bool = True) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw", acks=acks)

    dlq_topic = raw_topic(settings.topics.dlq)

    async def send_state(key: bytes, value: bytes | None) -> None:
        # Returns once the broker has acknowledged the record (None: a tombstone).
        await app.producer.send_and_wait(settings.topics.state, key, value, None, None, None)

    # The worker's state and its commit protocol (agents/worker/worker.py). faust keeps its aiokafka
    # producer behind a private accessor; batches need it.
    ends_client: list[Any] = []  # a consumer of its own for log-end queries, once started

    async def client() -> Any:
        # A member of no group (it never subscribes) that may read the group's commits.
        if not ends_client:
            c = settings.kafka.consumer(group_id=settings.app_id)
            try:
                await c.start()
            except BaseException:
                await c.stop()  # no unclosed client left behind by an outage
                raise
            ends_client.append(c)
        return ends_client[0]

    async def log_ends(tps: Sequence[TP]) -> dict[TP, int]:
        c = await client()
        found = await c.end_offsets([TopicPartition(tp.topic, tp.partition) for tp in tps])
        return {TP(tp.topic, tp.partition): int(o) for tp, o in found.items()}

    async def routing_lag() -> dict[int, int]:
        # Per sensor partition: the records that arrived more than idle_s ago and that the
        # group's routers have not committed yet. At 0, moving a lane on to now - idle_s
        # (the engine's idle rule) makes nothing late that was still to be routed.
        c, topic = await client(), settings.topics.sensor_events
        # The producer fetches a topic's metadata on demand (a consumer that never
        # subscribes knows no partitions of it).
        parts = await cast(Any, app.producer)._ensure_producer().partitions_for(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        since = int((time.time() - settings.idle_s) * 1000)
        ends, begins = await c.end_offsets(tps), await c.beginning_offsets(tps)
        found = await c.offsets_for_times({tp: since for tp in tps})
        lag = {}
        for tp in tps:
            hit = found.get(tp)
            due = int(ends[tp]) if hit is None else hit.offset  # arrived before `since`
            done = await c.committed(tp)
            lag[tp.partition] = due - (int(begins[tp]) if done is None else int(done))
        return lag

    async def stop_ends_client() -> None:
        while ends_client:
            await ends_client.pop().stop()

    w = Worker(settings, pipe, m, producer=lambda: cast(Any, app.producer)._ensure_producer(),
               send_state=send_state, consumer=lambda: app.consumer, log_ends=log_ends,
               routing_lag=routing_lag if settings.route_by_zone else None,
               reset_probe=stop_ends_client)
    app.worker = w
    # Readings and reports are re-keyed by zone onto the by-zone topic (one owner per zone,
    # whatever partitioner the producer used); the ingest agent keeps the zones' state.
    # The ingested topic's committed offset is the last snapshot's, and only the worker
    # commits it (Worker.on_rebalanced, Worker._snapshot): faust tracks no acks for it, so it
    # can never commit past a fetch it skipped (a fetch of an older generation, or one that
    # came before the partition was restored), whose records no snapshot holds.
    ingested = raw_topic(w.ingested_topic, acks=False)
    if settings.route_by_zone:
        app.agent(raw_topic(t.sensor_events), name="safetour.route-sensors")(w.route)
        app.agent(raw_topic(t.reports), name="safetour.route-reports")(w.route)
        app.agent(ingested, name="safetour.ingest")(w.ingest)
    else:
        app.agent(ingested, name="safetour.sensor-ingest")(w.ingest)
        app.agent(raw_topic(t.reports), name="safetour.reports")(w.reports)
    # mode's Signal.connect is typed for one receiver shape; these are the documented ones.
    app.on_partitions_revoked.connect(cast(Any, w.on_revoked))
    app.on_rebalance_complete.connect(cast(Any, w.on_rebalanced))
    # Sent once faust stopped fetching, before it stops the producer: the final snapshot.
    async def before_shutdown(sender: Any = None, **kwargs: Any) -> None:
        await w.on_shutdown()
        await stop_ends_client()

    app.on_before_shutdown.connect(cast(Any, before_shutdown))
    app.timer(interval=max(settings.slide_s / 2, 0.5), name="safetour.wall-clock")(
        w.wall_clock)
    app.task(w.probe_loop)  # the log ends that tell a quiet partition (agents/worker/worker.py)

    # Live registry: every worker reads the whole compacted zones topic (no consumer group)
    # and applies each record on top of the registry file; a null value deletes a zone.
    registry = {z.zone_id: z for z in zones}

    async def follow_zones() -> None:
        await follow_zone_topic(settings, registry, pipe, dlq_topic)

    app.task(follow_zones)

    # Spill-over across partitions: the newest density record of every neighbour zone,
    # whichever worker drives it (agents/worker/neighbours.py).
    if any(z.neighbours for z in zones):
        async def follow_neighbour_density() -> None:
            await follow_neighbours(settings, pipe.alerts, m, driven_here=w.drives)

        app.task(follow_neighbour_density)

    app.timer(interval=5.0, name="safetour.gauges")(w.gauges)

    # The dashboard and the rules tell a stalled or dead pipeline from a calm night by these.
    health_topic = raw_topic(settings.topics.health)

    async def heartbeat() -> None:
        async def send(key: bytes, value: bytes) -> None:
            await health_topic.send(key=key, value=value)

        await run_heartbeat(send, 5.0, w.heartbeat_snapshot, asyncio.Event())

    app.task(heartbeat)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        """The process is alive and serving."""
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """Partitions assigned and their state recovered: the worker is doing its job."""
        body = w.readiness()
        return web.json(body, status=200 if body["ready"] else 503)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp takes the charset separately; the exposition format is UTF-8 text.
        return web.bytes(generate_latest(m.registry), content_type=METRICS_CONTENT_TYPE)

    return app
