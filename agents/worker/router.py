"""The zone router's driver: a fetch of the input topics, re-keyed by zone onto the internal
by-zone topic (``Topics.by_zone``), acknowledged by the broker before the fetch counts as done.

The rules live in ``streams/route.py`` (pure); this module produces what they return, with an
explicit partition and timestamp per record (``BatchPublisher.send_routed``).
:meth:`ZoneRouter.send_fetch` hands a fetch to the producer and returns its deliveries; the
worker acknowledges the fetch, so its input offsets may be committed, only once every one of
them succeeded (agents/worker/flights.py, which also sends failed records again in order).
:meth:`ZoneRouter.route_fetch` is the same for one fetch, waited for: it raises
:class:`RouteError` if a delivery failed, and the fetch must not be committed.

The seam (how the worker, agents/worker/app.py, wires it):

1. Build one :class:`ZoneRouter` per worker::

       zr = ZoneRouter(zones, settings.topics)      # zones: the registry the pipeline has

   It reads the partition count of the by-zone topic from the producer's metadata at its
   first fetch (or pass ``partitions=``). Registry updates (the zones topic) go to
   ``zr.set_zones(zones)`` as they go to ``pipe.set_zones``.
2. Three agents, all in the worker's one consumer group:

   - a router agent on ``topics.sensor_events`` and one on ``topics.reports`` (batched
     topics, agents/worker/transport.py): each fetch goes to ``zr.send_fetch(producer,
     sources)`` and is acknowledged to faust, in order, once delivered
     (agents/worker/flights.py); faust commits the acknowledged offsets;
   - the ingest agent on ``topics.by_zone`` (also batched): ``pipe.process_routed_batch(
     sources, now_ms)`` and ``publish_all`` as today. Its partitions are the state
     partitions: snapshots, restore, ``start_offsets``, the wall-clock timer, heartbeats and
     readiness follow ``topics.by_zone``, no longer the sensor topic. The by-zone topic's
     record timestamps are the original arrivals, so the "recent" start works on it as is.

   ``producer`` is the aiokafka producer (``app.producer._ensure_producer()``): idempotent,
   ``acks=all`` from the client factory.
3. An input partition of the router without a committed offset starts where
   :func:`router_start_offsets` says (SAFETOUR_START: ``recent`` = the first arrival at or
   after now - (window + grace); ``from-start`` = the oldest retained). faust's
   ``consumer_auto_offset_reset`` would start it at the oldest retained: a week of input
   routed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP

from schemas import SafetourError, Zone
from streams.records import Consumed
from streams.route import RoutedRecord, Router

from ..config import Settings, Topics
from .publish import BatchPublisher, RoutedSent
from .state import start_offsets

log = logging.getLogger(__name__)


class RouteError(SafetourError, RuntimeError):
    """Routed records were not acknowledged: the fetch must not be committed."""


@dataclass(frozen=True, slots=True)
class Routed:
    """What one :meth:`ZoneRouter.route_fetch` did."""

    messages: int  # input messages routed
    records: int  # records the broker acknowledged on the by-zone topic
    partitions: dict[int, int]  # by-zone partition -> records written there


class ZoneRouter:
    """Routes fetches of the sensor and reports topics to ``topics.by_zone``."""

    def __init__(
        self, zones: Iterable[Zone], topics: Topics, *, partitions: int | None = None,
        publisher: BatchPublisher | None = None,
    ) -> None:
        self.topics = topics
        self._zones = list(zones)
        self._publisher = publisher or BatchPublisher()
        self.router: Router | None = (
            None if partitions is None else
            Router(self._zones, partitions, reports_topic=topics.reports))

    def set_zones(self, zones: Iterable[Zone]) -> None:
        """A new registry: reports located by lat/lon follow it from the next fetch."""
        self._zones = list(zones)
        if self.router is not None:
            self.router.set_zones(self._zones)

    async def _router(self, producer: Any) -> Router:
        if self.router is None:
            parts = sorted(await producer.partitions_for(self.topics.by_zone))
            if not parts or parts != list(range(len(parts))):
                raise RouteError(f"topic {self.topics.by_zone} has partitions {parts}; run "
                                 "`safetour topics create`")
            self.router = Router(self._zones, len(parts), reports_topic=self.topics.reports)
        return self.router

    async def send_fetch(self, producer: Any, messages: Sequence[Consumed]) -> list[RoutedSent]:
        """Route ``messages`` (one fetch of the sensor or reports topic, or both) and hand
        them to the producer; returns their deliveries, not yet acknowledged."""
        if not messages:
            return []
        router = await self._router(producer)
        return await self._publisher.send_routed(
            producer, self.topics.by_zone, router.route_batch(messages))

    async def resend(self, producer: Any, partition: int, records: Sequence[RoutedRecord]
                     ) -> list[RoutedSent]:
        """Records whose delivery failed, handed to the producer again (same partition,
        same order)."""
        return await self._publisher.send_routed_to(
            producer, self.topics.by_zone, partition, records)

    async def route_fetch(self, producer: Any, messages: Sequence[Consumed]) -> Routed:
        """Route ``messages`` and produce them; return once the broker acknowledged every
        record. Raises :class:`RouteError` if any was not (after the producer's own
        retries): then the fetch's input offsets must not be committed."""
        sent = await self.send_fetch(producer, messages)
        # Wait for every delivery, failed or not, before judging: no send is left in flight.
        results = await asyncio.gather(*(f for s in sent for f in s.futures),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise RouteError(f"{len(failed)} of {len(results)} records to "
                             f"{self.topics.by_zone} failed: {failed[0]!r}") from failed[0]
        parts: dict[int, int] = {}
        for d in sent:
            parts[d.partition] = parts.get(d.partition, 0) + len(d.records)
        return Routed(len(messages), sum(parts.values()), parts)


async def router_start_offsets(
    settings: Settings, topic: str, partitions: Iterable[int], now_ms: int | None = None
) -> dict[int, int]:
    """Where the router starts ``partitions`` of an input ``topic`` that have no committed
    offset: SAFETOUR_START=recent, the first arrival at or after now - (window + grace);
    from-start, the oldest retained offset (agents/worker/state.py ``start_offsets``)."""
    parts = sorted(set(partitions))
    if settings.start == "from-start":
        since = None
    else:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        since = now - round((settings.window_s + settings.grace_s) * 1000)
    starts = await start_offsets(settings.kafka, topic, parts, since)
    for p in parts:
        log.info("%s[%d]: no committed offset; routing from offset %d (SAFETOUR_START=%s)",
                 topic, p, starts[p], settings.start)
    return starts


async def committed_offsets(
    settings: Settings, tps: Iterable[TP]
) -> dict[TP, int | None]:
    """The worker group's committed offset of each of ``tps`` (None: never committed). A
    consumer of the group that does not join it (no subscription) asks the coordinator."""
    consumer = settings.kafka.consumer(group_id=settings.app_id)
    await consumer.start()
    try:
        out: dict[TP, int | None] = {}
        for tp in tps:
            off = await consumer.committed(TopicPartition(tp.topic, tp.partition))
            out[tp] = off if off is not None and off >= 0 else None
        return out
    finally:
        await consumer.stop()
