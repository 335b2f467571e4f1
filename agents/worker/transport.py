"""A faust transport that hands the sensor topic to agents one *fetch* at a time.

faust pays ~70 µs of Python per message between the Kafka client and an agent
(``docs/perf-notes.md``, Findings: a ``wait_first`` race, an ``Event``, sensor hooks, ack
bookkeeping), which caps a plain agent near 13,000 messages/s, while the client itself reads
~30x that. safetour keeps faust (consumer group, rebalancing, offset commits, recovery hooks,
web, timers) but changes what a *message* is on the sensor topic: :class:`BatchingConsumer`
folds all records of one partition in one fetch into a single message whose value is a
:class:`RecordBatch` (the client's records, untouched) and whose offset is the last one. The
per-message machinery then runs once per fetch (typically hundreds to thousands of records).

Offsets stay exact: faust commits the offset after a message it saw acked, and records the
offsets a message skipped as a *gap* that counts as processed once a later message is acked
(the same machinery that handles compacted topics), so committing a batch's last offset
commits the whole batch, and a worker that dies mid-batch replays it.

Topics not named in ``batch_topics`` (reports, ...) are passed through record by record.

Every safetour faust app (:class:`IdempotentApp`, and the worker's app on
:class:`BatchingTransport`) has an idempotent ``acks=all`` producer
(:class:`IdempotentProducer`): faust's own sets idempotence only inside transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.records import Consumed, SourceMessage


class RecordBatch(list[Any]):
    """The records of one partition from one fetch (aiokafka ``ConsumerRecord`` objects)."""


class BatchRecord(NamedTuple):
    """Stands in for one ConsumerRecord, as faust's driver reads one (``_to_message``)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    timestamp_type: int
    headers: Sequence[tuple[str, bytes]]
    key: bytes | None
    value: RecordBatch
    checksum: int | None
    serialized_key_size: int
    serialized_value_size: int


def fold(records: Mapping[Any, list[Any]], batch_topics: frozenset[str]) -> dict[Any, list[Any]]:
    """One :class:`BatchRecord` per partition of a batch topic; other topics unchanged."""
    out: dict[Any, list[Any]] = {}
    for tp, recs in records.items():
        if not recs or tp.topic not in batch_topics:
            out[tp] = recs
            continue
        last = recs[-1]
        out[tp] = [BatchRecord(last.topic, last.partition, last.offset, last.timestamp,
                               last.timestamp_type, (), None, RecordBatch(recs), None, 0,
                               sum(r.serialized_value_size for r in recs))]
    return out


class BatchingConsumer(faust_aiokafka.Consumer):
    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:  # noqa: ASYNC109
        records = await super()._getmany(active_partitions, timeout)
        topics: frozenset[str] = getattr(self.app, "batch_topics", frozenset())
        return fold(records, topics) if topics and records else records

    def ack(self, message: Any) -> bool:
        """A message of an older consumer generation is not acked for committing.

        faust skips such a message (one fetched before a rebalance, delivered after it) and
        acks it anyway, so that lag does not grow; its records were never processed in this
        generation. Recorded as acked here, its offset would be committed at the next tick,
        possibly before the partition's records were fetched and routed again: a crash in
        between would lose them."""
        current = getattr(self.app, "consumer_generation_id", None)
        generation = getattr(message, "generation_id", None)
        if generation is not None and current is not None and generation != current:
            message.acked = True  # nothing to commit: this generation reads them again
            self._unacked_messages.discard(message)  # nor to wait for at the next rebalance
            return False
        return bool(super().ack(message))

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """faust's seek back to the committed offsets, a committed 0 included.

        faust relies on this seek to read again what it dropped: the records a fetch
        returned while its flow was stopped (during a rebalance, between resuming the
        partitions and resuming the flow). aiokafka's ``seek_to_committed`` seeks only to an
        offset above 0, so a partition committed at 0 (a router input whose start was
        committed before its first record) stayed past the dropped records: they were never
        routed (a reading lost in test_chaos, right after a worker joined)."""
        committed: Mapping[Any, int] = await super().seek_to_committed()
        rewind_committed_zeros(committed, self._thread.seek)
        return committed

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """The offsets skipped before a message: ``offset_from`` up to, *not including*,
        ``offset_to`` (the message's own offset).

        faust calls this with the message's offset as ``offset_to`` and records the gap up
        to and including it, so once the message is acked its offset is in the acked list
        twice; ``_new_offset`` then commits only up to the first repeat, one message per
        commit (robinhood/faust#625). With a message per fetch, the router's commits fell
        minutes behind its input, and the lanes, which move on by wall time only once the
        router committed up to the end, waited for them."""
        if offset_to - 1 >= offset_from:
            await super()._add_gap(tp, offset_from, offset_to - 1)


def rewind_committed_zeros(committed: Mapping[Any, int | None],
                           seek: Callable[[Any, int], None]) -> None:
    """Seek every partition committed at offset 0 to 0 (what aiokafka's
    ``seek_to_committed`` leaves out). None (never committed) is left to the consumer's
    reset policy: safetour commits a start for every partition it reads before faust seeks."""
    for tp, offset in committed.items():
        if offset == 0:
            seek(tp, 0)


class IdempotentProducer(faust_aiokafka.Producer):
    """faust's aiokafka producer, idempotent and waiting for every in-sync replica."""

    def _settings_extra(self) -> Mapping[str, Any]:
        extra: Mapping[str, Any] = super()._settings_extra()
        return {**extra, "acks": "all", "enable_idempotence": True}


class Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`IdempotentProducer`."""

    Producer = IdempotentProducer


class IdempotentApp(faust.App):
    """faust's App on :class:`Transport` (its broker settings: ``KafkaConfig.faust_kwargs``)."""

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)


class BatchingTransport(Transport):
    Consumer = BatchingConsumer


def sources_of(event: Any) -> Sequence[Consumed]:
    """The messages one faust event carries: a whole fetch (its aiokafka records, as they
    are) or one message."""
    value = event.value
    if isinstance(value, RecordBatch):
        return value
    return [source_of(event)]


def source_of(event: Any) -> SourceMessage:
    m = event.message
    ts = m.timestamp
    return SourceMessage(
        m.topic, m.partition, m.offset, None if ts is None else round(ts * 1000), m.key,
        m.value, tuple(m.headers or ()),
    )
