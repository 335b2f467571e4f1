"""The Faust application: topics, agents and the web server of ``safetour worker``.

There is no module-level app: :func:`build_app` makes one from :class:`Settings`, so tests and
several workers in one process never share hidden state.

Ingest path: the sensor agent takes *batches* of raw messages (``take_events``), hands the
whole batch to :class:`streams.pipeline.Pipeline` (decode, validate, window, alert) and publishes
what it returns. Faust's per-message machinery is paid once per message, everything else once
per batch (see ``shared/PERF-NOTES.md``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from schemas import load_zones
from streams import WindowedDensityEngine
from streams.pipeline import Outputs, OutRecord, Pipeline, SourceMessage

from .config import Settings
from .topics import DLQ_MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)


def kafka_url(bootstrap: str) -> str:
    """``host1:9092,host2:9092`` as faust's broker URL list."""
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


def _source(event: Any) -> SourceMessage:
    m = event.message
    ts = m.timestamp
    return SourceMessage(
        m.topic, m.partition, m.offset, None if ts is None else round(ts * 1000), m.key, m.value
    )


def build_app(settings: Settings, pipeline: Pipeline | None = None) -> faust.App:
    zones = load_zones(settings.zones_file)
    pipe = pipeline or Pipeline(
        zones, engine=WindowedDensityEngine(zones, **settings.engine_kwargs()))
    datadir = settings.state_dir / "faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=kafka_url(settings.bootstrap_servers),
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
    )

    def raw_topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")

    sensor_topic = raw_topic(settings.topics.sensor_events)
    alerts_topic = raw_topic(settings.topics.alerts)
    density_topic = raw_topic(settings.topics.density)
    dlq_topic = raw_topic(settings.topics.dlq)

    async def publish(topic: Any, records: list[OutRecord]) -> None:
        for r in records:
            await topic.send(key=r.key, value=r.value, headers=r.headers or None)

    async def publish_all(out: Outputs) -> None:
        await publish(dlq_topic, out.dlq)
        await publish(density_topic, out.density)
        await publish(alerts_topic, out.alerts)
        for r in out.alerts:
            log.info("alert %s", r.value.decode())
        if out.rejected:
            log.warning("dead-lettered %s", dict(out.rejected))

    async def ingest(stream: Any) -> None:
        async for batch in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            await publish_all(pipe.process_sensor_batch([_source(e) for e in batch]))

    app.agent(sensor_topic, name="safetour.sensor-ingest")(ingest)

    async def wall_clock() -> None:
        # Quiet partitions: windows still close, so a silent zone does not freeze.
        await publish_all(pipe.tick(int(time.time() * 1000)))

    app.timer(interval=max(settings.slide_s / 2, 0.5), name="safetour.wall-clock")(wall_clock)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    return app
