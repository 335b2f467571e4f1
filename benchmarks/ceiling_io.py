"""The I/O ceiling: consume, decode and produce what safetour produced, and nothing else.

The read-only ceiling (``e2e.ceiling``) produces no outputs, so it is not the limit of the job:
the job has to consume the input, decode it and produce its output records. This row does
exactly that with raw aiokafka, in the same run:

1. :func:`capture` reads back every record a safetour run wrote to its output topics (density,
   alerts, CAP alerts, dead letters): key, value, headers and partition, in partition order.
2. :func:`plan` gives each record the number of input readings after which safetour could
   first emit it. A density record for the window ending at W exists once the input passed
   W + grace (``e2e.Progress``); any other record is due with the density record appended just
   before it. Per partition the due counts are made non-decreasing, so producing in due order
   keeps every partition's order.
3. :func:`io_ceiling` consumes the input topic (``getmany`` + ``orjson.loads`` per message, as
   the read-only ceiling does) and, after each fetch, produces every record now due, to the
   same partition of a topic of its own per output topic: ``create_batch``/``send_batch`` per
   partition, the partitions side by side (``agents/worker/publish.py`` builds the same
   batches, one partition after another), or ``send`` with linger. The producer is
   configured as the worker's: idempotent, ``acks=all``, 5 ms linger. The clock runs from the
   first fetched record until the broker acknowledged the last produced record.
"""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.topics import partitions_of
from schemas import parse_ts

from .e2e import Progress, ensure_topic

__all__ = ["Captured", "Planned", "capture", "io_ceiling", "plan"]

MODES = ("batch", "send")


@dataclass(frozen=True, slots=True)
class Captured:
    """One output record of a safetour run, as the broker holds it."""

    topic: str  # safetour's output topic it was read from
    partition: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int  # ms
    window_end: int | None  # density records: the window's end, epoch ms


@dataclass(frozen=True, slots=True)
class Planned:
    """The records to produce, in due order, and the partition count of each topic."""

    records: list[Captured]
    due: list[int]  # due[i]: input readings after which records[i] is produced
    partitions: dict[str, int]

    @property
    def bytes(self) -> int:
        return sum(len(r.value) + len(r.key or b"") for r in self.records)


def _window_end(value: bytes) -> int | None:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    we = doc.get("window_end") if isinstance(doc, dict) else None
    return parse_ts(we) if we is not None else None


async def capture(bootstrap: str, topics: Sequence[str]) -> tuple[list[Captured],
                                                                  dict[str, int]]:
    """Every record of ``topics`` up to their current ends, per partition in offset order;
    and each topic's partition count."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    out: list[Captured] = []
    counts: dict[str, int] = {}
    try:
        tps: list[TopicPartition] = []
        for topic in topics:
            parts = await partitions_of(bootstrap, topic)
            counts[topic] = len(parts)
            tps += [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        left = {tp for tp in tps if ends[tp] > 0}
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000, max_records=50_000)
            for tp, records in batches.items():
                for r in records:
                    if r.value is not None:
                        density = tp.topic == topics[0]
                        out.append(Captured(tp.topic, tp.partition, r.key, r.value,
                                            tuple(r.headers), r.timestamp,
                                            _window_end(r.value) if density else None))
                    if r.offset + 1 >= ends[tp]:
                        left.discard(tp)
    finally:
        await consumer.stop()
    return out, counts


def plan(records: Sequence[Captured], progress: Progress, total: int,
         partitions: dict[str, int]) -> Planned:
    """Due counts of input readings for ``records`` (see the module's docstring)."""
    by_ts = sorted((r.timestamp, min(progress.readings_for(r.window_end), total))
                   for r in records if r.window_end is not None)
    ts_keys = [t for t, _ in by_ts]
    running_max: list[int] = []
    hi = 0
    for _, d in by_ts:
        hi = max(hi, d)
        running_max.append(hi)
    last: dict[tuple[str, int], int] = {}
    due: list[int] = []
    for r in records:
        if r.window_end is not None:
            d = min(progress.readings_for(r.window_end), total)
        else:
            i = bisect.bisect_right(ts_keys, r.timestamp)
            d = running_max[i - 1] if i else 0
        tp = (r.topic, r.partition)
        d = max(d, last.get(tp, 0))  # never before an earlier record of its partition
        last[tp] = d
        due.append(d)
    order = sorted(range(len(records)), key=lambda i: due[i])  # stable: partition order kept
    return Planned([records[i] for i in order], [due[i] for i in order], dict(partitions))


class _Sink:
    """Produces planned records to the I/O ceiling's own topics, same partitions."""

    def __init__(self, producer: AIOKafkaProducer, names: dict[str, str], mode: str) -> None:
        self.producer, self.names, self.mode = producer, names, mode
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, records: Sequence[Captured]) -> None:
        p = self.producer
        if self.mode == "send":
            for r in records:
                self.futures.append(await p.send(self.names[r.topic], r.value, key=r.key,
                                                 partition=r.partition,
                                                 headers=list(r.headers) or None))
            return
        by_tp: dict[tuple[str, int], list[Captured]] = {}
        for r in records:
            by_tp.setdefault((r.topic, r.partition), []).append(r)
        # Partitions side by side: ``send_batch`` waits while its partition's previous batch
        # is still queued, and one partition's wait need not hold up the others.
        await asyncio.gather(*(self._partition(self.names[topic], part, recs)
                               for (topic, part), recs in by_tp.items()))

    async def _partition(self, topic: str, part: int, recs: Sequence[Captured]) -> None:
        p = self.producer
        builder = p.create_batch()
        for r in recs:
            while builder.append(timestamp=None, key=r.key, value=r.value,
                                 headers=list(r.headers)) is None:
                self.futures.append(await p.send_batch(builder, topic, partition=part))
                builder = p.create_batch()
        if builder.record_count():
            self.futures.append(await p.send_batch(builder, topic, partition=part))


async def io_ceiling(bootstrap: str, topic: str, messages: int, planned: Planned, *,
                     mode: str = "batch") -> tuple[int, float, int]:
    """Consume ``topic`` (``messages`` messages), decode each, produce ``planned`` as the
    readings are consumed: (readings, seconds, records produced)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {MODES}")
    tag = uuid.uuid4().hex[:6]
    names = {t: f"{topic}.io-{i}-{tag}" for i, t in enumerate(sorted(planned.partitions))}
    for t, name in names.items():
        await ensure_topic(bootstrap, name, planned.partitions[t])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, max_partition_fetch_bytes=4 << 20,
                                fetch_max_bytes=64 << 20)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        for name in names.values():  # metadata before the clock starts, as the worker has it
            await producer.partitions_for(name)
        sink = _Sink(producer, names, mode)
        tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = readings = sent = 0
        start = 0.0
        loads = orjson.loads
        recs, due = planned.records, planned.due
        while seen < messages:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not start and batches:
                start = time.perf_counter()
            for records in batches.values():
                for r in records:
                    v = loads(r.value)
                    readings += len(v) if isinstance(v, list) else 1
                seen += len(records)
            upto = bisect.bisect_right(due, readings) if seen < messages else len(recs)
            if upto > sent:
                await sink.send(recs[sent:upto])
                sent = upto
        await asyncio.gather(*sink.futures)
        return readings, time.perf_counter() - start, sent
    finally:
        await producer.stop()
        await consumer.stop()
