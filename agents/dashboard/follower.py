"""The dashboard's Kafka follower: it reads the alerts, acks, density, health and shelves
topics (no consumer group) into the :class:`~agents.dashboard.board.Board`, skipping and
counting malformed records, and keeps trying while Kafka cannot be read (the board says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from schemas import Reason, Rejection, decode_ack, decode_alert, decode_json_object

from ..heartbeat import decode_heartbeat
from ..kafka import KafkaTarget, KafkaUnreachable, as_config
from ..logs import ThrottledLog
from ..rejects import InternalRejects
from ..shelves import parse_shelf
from .board import Board

__all__ = ["apply_records", "follow_retrying", "follow_topics"]

log = logging.getLogger(__name__)


def _density(value: bytes | None) -> dict[str, Any] | Rejection:
    """A density record the board can show: zone_id and window_end strings, density a number
    or null (a blind zone)."""
    d = decode_json_object(value)
    if isinstance(d, Rejection):
        return d
    for key in ("zone_id", "window_end"):
        v = d.get(key)
        if not isinstance(v, str) or not 1 <= len(v) <= 64:
            return Rejection(Reason.SCHEMA, f"/{key}: must be a string of 1..64 characters")
    dens = d.get("density")
    if dens is not None and (isinstance(dens, bool) or not isinstance(dens, int | float)):
        return Rejection(Reason.SCHEMA, "/density: must be a number or null")
    conf = d.get("confidence")
    if conf is not None and (isinstance(conf, bool) or not isinstance(conf, int | float)
                             or not 0 <= conf <= 1):
        return Rejection(Reason.SCHEMA, "/confidence: must be a number 0..1 or null")
    return d


def apply_records(board: Board, topic_kind: str, values: Iterable[bytes | None], *,
                  timestamps_ms: Iterable[int | None] | None = None,
                  rejects: InternalRejects | None = None, topic: str = "") -> int:
    """Feed consumed record values of one topic (kind ``alert``, ``ack``, ``density``,
    ``health`` or ``shelf``) to the board; returns how many were malformed (counted and logged
    through ``rejects``, skipped: the records beside them are applied)."""
    bad = 0
    stamps = iter(timestamps_ms) if timestamps_ms is not None else None
    for v in values:
        ts = next(stamps, None) if stamps is not None else None
        doc: Any
        if topic_kind == "ack":
            doc = decode_ack(v)
        elif topic_kind == "alert":
            doc = decode_alert(v)
        elif topic_kind == "health":
            doc = decode_heartbeat(v)
        elif topic_kind == "shelf":
            parsed = parse_shelf(v, ts_ms=ts, now_ms=int(board.clock() * 1000))
            doc = Rejection(Reason.SCHEMA, parsed) if isinstance(parsed, str) else parsed
        else:
            doc = _density(v)
        if isinstance(doc, Rejection):
            bad += 1
            if rejects is not None:
                rejects.count(topic or topic_kind, doc)
        elif topic_kind == "ack":
            board.on_ack(doc)
        elif topic_kind == "alert":
            board.on_alert(doc)
        elif topic_kind == "health":
            board.on_heartbeat(doc, ts)
        elif topic_kind == "shelf":
            board.on_shelf(*doc)
        else:
            board.on_density(doc, ts)
    return bad


async def follow_topics(kafka: KafkaTarget, topics: Mapping[str, tuple[str, float]],
                        board: Board, stop: asyncio.Event,
                        rejects: InternalRejects | None = None) -> None:
    """Read ``{kind: (topic, lookback_s)}`` into ``board`` until ``stop``."""
    from aiokafka import TopicPartition  # noqa: PLC0415

    from ..topics import partitions_of, seek_since  # noqa: PLC0415

    cfg = as_config(kafka)
    kind_of: dict[str, str] = {t: k for k, (t, _) in topics.items()}
    consumer = cfg.consumer()
    await cfg.start(consumer)
    try:
        tps = [TopicPartition(t, p) for t, _ in topics.values()
               for p in await partitions_of(cfg, t)]
        consumer.assign(tps)
        now = time.time()
        for topic, lookback_s in topics.values():
            await seek_since(consumer, [tp for tp in tps if tp.topic == topic],
                             int((now - lookback_s) * 1000))
        board.kafka_failed(None)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=250, max_records=5000)
            for tp, records in batches.items():
                apply_records(board, kind_of[tp.topic], [r.value for r in records],
                              timestamps_ms=[r.timestamp for r in records], rejects=rejects,
                              topic=tp.topic)
    finally:
        await consumer.stop()


async def follow_retrying(kafka: KafkaTarget, topics: Mapping[str, tuple[str, float]],
                          board: Board, stop: asyncio.Event, rejects: InternalRejects,
                          *, retry_s: float = 2.0) -> None:
    """:func:`follow_topics`, started again whenever it fails: a dashboard that cannot read
    Kafka says so on every page (the banner) and keeps trying, it does not go dark."""
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    from ..topics import TopicError  # noqa: PLC0415

    cfg = as_config(kafka)
    failures = ThrottledLog(log)
    while not stop.is_set():
        try:
            await follow_topics(cfg, topics, board, stop, rejects)
        except (KafkaError, TopicError, KafkaUnreachable, OSError) as exc:
            board.kafka_failed(f"{type(exc).__name__}: {exc}")
            failures.note("dashboard: cannot read Kafka at %s: %s; retrying", cfg.bootstrap,
                          exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)
