"""Publishing a batch's outputs: one aiokafka record batch per partition, not one send each.

A batch of sensor messages closes hundreds or thousands of windows (one density record per
zone per slide). ``AIOKafkaProducer.send`` costs ~10 µs of Python per record (partitioner,
accumulator, a future); :meth:`BatchPublisher.publish` partitions each key once (cached;
zone keys repeat), appends the records to ``create_batch()`` builders and hands each full builder to
``send_batch``. Records land on the partitions the producer's default partitioner would pick
(murmur2 of the key), so keyed order per zone is what consumers expect.

The producer is faust's own (``app.producer``), so faust's flush before each offset commit
still covers these records: delivery stays at least once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from streams.pipeline import OutRecord
from streams.route import RoutedRecord


class BatchPublisher:
    def __init__(self) -> None:
        self._partitioner = DefaultPartitioner()
        self._parts: dict[str, list[int]] = {}
        self._key_part: dict[tuple[str, bytes], int] = {}

    async def _partition(self, producer: Any, topic: str, key: bytes) -> int:
        cached = self._key_part.get((topic, key))
        if cached is not None:
            return cached
        parts = self._parts.get(topic)
        if parts is None:
            parts = sorted(await producer.partitions_for(topic))
            self._parts[topic] = parts
        p: int = self._partitioner(key, parts, parts)
        if len(self._key_part) < 1_000_000:  # bounded: a registry has at most this many zones
            self._key_part[(topic, key)] = p
        return p

    async def publish(self, producer: Any, topic: str, records: Sequence[OutRecord]) -> int:
        """Queue ``records`` on ``topic``; returns how many batches were handed over."""
        by_part: dict[int, list[OutRecord]] = {}
        for r in records:
            if r.key is None:  # unkeyed: the producer spreads them
                await producer.send(topic, r.value, headers=r.headers or None)
                continue
            by_part.setdefault(await self._partition(producer, topic, r.key), []).append(r)
        sent = 0
        for part, recs in by_part.items():
            builder = producer.create_batch()
            for r in recs:
                while builder.append(timestamp=None, key=r.key, value=r.value,
                                     headers=r.headers) is None:
                    if builder.record_count() == 0:  # larger than a whole batch: send alone
                        await producer.send(topic, r.value, key=r.key, partition=part,
                                            headers=r.headers or None)
                        break
                    await producer.send_batch(builder, topic, partition=part)
                    sent += 1
                    builder = producer.create_batch()
            if builder.record_count():
                await producer.send_batch(builder, topic, partition=part)
                sent += 1
        return sent

    async def send_routed(
        self, producer: Any, topic: str, records: Sequence[RoutedRecord]
    ) -> list[asyncio.Future[Any]]:
        """Queue by-zone records (streams/route.py) on their own partitions, with their own
        timestamps, in order per partition; return the delivery futures (each resolves once
        the broker acknowledged its batch, or raises its error). Awaiting all of them is
        what makes the input offsets safe to commit (agents/router.py)."""
        by_part: dict[int, list[RoutedRecord]] = {}
        for r in records:
            by_part.setdefault(r.partition, []).append(r)
        futures: list[asyncio.Future[Any]] = []
        for part, recs in by_part.items():
            builder = producer.create_batch()
            for r in recs:
                while builder.append(timestamp=r.timestamp_ms, key=r.key, value=r.value,
                                     headers=r.headers) is None:
                    if builder.record_count() == 0:  # larger than a whole batch: send alone
                        futures.append(await producer.send(
                            topic, r.value, key=r.key, partition=part,
                            timestamp_ms=r.timestamp_ms, headers=r.headers or None))
                        break
                    futures.append(await producer.send_batch(builder, topic, partition=part))
                    builder = producer.create_batch()
            if builder.record_count():
                futures.append(await producer.send_batch(builder, topic, partition=part))
        return futures
