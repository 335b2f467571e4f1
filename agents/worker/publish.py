"""Publishing a batch's outputs: one aiokafka record batch per partition, not one send each.

A batch of sensor messages closes hundreds or thousands of windows (one density record per
zone per slide). ``AIOKafkaProducer.send`` costs ~10 µs of Python per record (partitioner,
accumulator, a future); :meth:`BatchPublisher.publish` partitions each key once (cached;
zone keys repeat), appends the records to ``create_batch()`` builders and hands each full builder to
``send_batch``. Records land on the partitions the producer's default partitioner would pick
(murmur2 of the key), so keyed order per zone is what consumers expect.

Every send returns its delivery future (aiokafka's ``send`` and ``send_batch`` do): a
:class:`Sent` keeps it with the records it covers, so the worker's delivery tracker
(``agents/worker/worker.py``) can await it before a snapshot and send the records again if it
failed.
Nothing is fire-and-forget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from streams.records import OutRecord
from streams.route import RoutedRecord


@dataclass(frozen=True, slots=True)
class Sent:
    """Records handed to the producer and the future of their delivery (one record, or one
    record batch for one partition)."""

    future: asyncio.Future[Any]
    topic: str
    records: Sequence[OutRecord]
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class RoutedSent:
    """By-zone records handed to the producer, in order, for one partition, and the
    future of each one's delivery (``futures[i]`` is that of ``records[i]``)."""

    futures: Sequence[asyncio.Future[Any]]
    partition: int
    records: Sequence[RoutedRecord]


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

    async def publish(self, producer: Any, topic: str, records: Sequence[OutRecord]
                      ) -> list[Sent]:
        """Queue ``records`` on ``topic``: few of them one send each, more as one record
        batch per partition. Returns what was handed over, with its delivery futures."""
        if len(records) < 8:
            return [await self._one(producer, topic, r, None) for r in records]
        by_part: dict[int, list[OutRecord]] = {}
        out: list[Sent] = []
        for r in records:
            if r.key is None:  # unkeyed: the producer spreads them
                out.append(await self._one(producer, topic, r, None))
                continue
            by_part.setdefault(await self._partition(producer, topic, r.key), []).append(r)
        for part, recs in by_part.items():
            out += await self.send_batches(producer, topic, part, recs)
        return out

    async def send_batches(self, producer: Any, topic: str, part: int,
                           recs: Sequence[OutRecord]) -> list[Sent]:
        """``recs`` (all for partition ``part``) in as few record batches as fit."""
        out: list[Sent] = []
        builder = producer.create_batch()
        inside: list[OutRecord] = []
        for r in recs:
            while builder.append(timestamp=None, key=r.key, value=r.value,
                                 headers=r.headers) is None:
                if builder.record_count() == 0:  # larger than a whole batch: send alone
                    out.append(await self._one(producer, topic, r, part))
                    break
                fut = await producer.send_batch(builder, topic, partition=part)
                out.append(Sent(fut, topic, inside, part))
                builder, inside = producer.create_batch(), []
            else:
                inside.append(r)
        if builder.record_count():
            fut = await producer.send_batch(builder, topic, partition=part)
            out.append(Sent(fut, topic, inside, part))
        return out

    async def resend(self, producer: Any, sent: Sent) -> list[Sent]:
        """Send the records of a failed delivery again (to the same partition)."""
        if sent.partition is not None and len(sent.records) > 1:
            return await self.send_batches(producer, sent.topic, sent.partition, sent.records)
        return [await self._one(producer, sent.topic, r, sent.partition) for r in sent.records]

    @staticmethod
    async def _one(producer: Any, topic: str, r: OutRecord, part: int | None) -> Sent:
        fut = await producer.send(topic, r.value, key=r.key, partition=part,
                                  headers=r.headers or None)
        return Sent(fut, topic, [r], part)

    async def send_routed(
        self, producer: Any, topic: str, records: Sequence[RoutedRecord]
    ) -> list[RoutedSent]:
        """Queue by-zone records (streams/route.py) on their own partitions, with their own
        timestamps, in order per partition; return what was handed over with its delivery
        futures (each resolves once the broker acknowledged its batch, or raises its error).
        Awaiting all of them is what makes the input offsets safe to commit
        (agents/worker/router.py)."""
        by_part: dict[int, list[RoutedRecord]] = {}
        for r in records:
            by_part.setdefault(r.partition, []).append(r)
        out: list[RoutedSent] = []
        for part, recs in by_part.items():
            out += await self.send_routed_to(producer, topic, part, recs)
        return out

    @staticmethod
    async def send_routed_to(
        producer: Any, topic: str, part: int, recs: Sequence[RoutedRecord]
    ) -> list[RoutedSent]:
        """``recs`` (all for partition ``part``), in order, one ``send`` each.

        Not ``send_batch``: aiokafka's ``send_batch`` waits until the partition's previous
        batch has left for the broker, which, one fetch after another, cost the router one
        produce round trip per fetch and partition (1.5 s of lag at 2,000 readings/s).
        ``send`` appends to the partition's open batch, so fetches routed while a batch is in
        flight travel together in the next one."""
        futures: list[asyncio.Future[Any]] = []
        for r in recs:
            if r.key is None and r.value is None:
                # ``send`` refuses a record with neither (an undecodable batch's sentinel,
                # passed on to be dead-lettered); a batch of its own takes it, behind the
                # partition's records sent before it.
                builder = producer.create_batch()
                builder.append(timestamp=r.timestamp_ms, key=None, value=None,
                               headers=r.headers)
                futures.append(await producer.send_batch(builder, topic, partition=part))
                continue
            futures.append(await producer.send(topic, r.value, key=r.key, partition=part,
                                               timestamp_ms=r.timestamp_ms,
                                               headers=r.headers or None))
        return [RoutedSent(futures, part, recs)] if recs else []
