"""A record batch the Kafka client cannot decode never stops a safetour process.

aiokafka decodes the record batches of a fetch lazily, while ``getmany``/``getone`` hand
records out (``aiokafka.consumer.fetcher.PartitionRecords._unpack_records``). A batch it
cannot decode raises out of ``getmany``: ``UnsupportedCodecError`` (a codec whose library is
missing, or an unknown codec id), ``CorruptRecordException`` (a failed CRC check, a broken
record inside the batch). Because nothing advances the position past that batch, the process
fails at the same fetch on every restart; and the records of that ``getmany`` call that were
already taken from their fetches (the good records before the batch, other partitions) are
lost: their positions have moved on, the caller never sees them.

:class:`SafePartitionRecords` is aiokafka's ``PartitionRecords`` with one change: an error
while reading one batch skips *that batch* and yields, in its place, one sentinel
``ConsumerRecord`` (key and value None) whose headers say what failed and which offsets were
skipped (:func:`undecodable_info` reads it back). Records of the batch already handed out stay
handed out; the batches after it are read as usual. Consumers therefore see a value-None
record they must not mistake for data: the worker's pipeline dead-letters it with reason
``undecodable``; the other processes skip it (as they skip any record without a value).

:func:`install_safe_fetch` swaps the class into aiokafka for the whole process; ``safetour``
calls it first thing (``agents.cli.main``). Nothing happens at import time.

Not covered: a fetch response whose *framing* is broken (a batch length below the minimum,
``MemoryRecords.next_batch`` raising) has no batch boundary to skip to; it still raises, as in
aiokafka. The broker validates framing and CRC on append, so that is damage in transit only.
A key or value deserializer that raises (safetour's consumers use none) counts as a batch
that cannot be decoded, from that record on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import aiokafka.errors as kafka_errors
from aiokafka.consumer import fetcher as kafka_fetcher
from aiokafka.structs import ConsumerRecord

log = logging.getLogger("safetour.kafka")

UNDECODABLE_HEADER = "safetour-undecodable"
UNDECODABLE_OFFSETS_HEADER = "safetour-undecodable-offsets"

ERROR_TEXT_MAX = 300  # characters of the error kept in the sentinel's header
LOG_EVERY_S = 60.0  # one warning per error text per minute (installed class)


def error_text(exc: BaseException) -> str:
    """The error on one ASCII line: ``UnsupportedCodecError: Libraries for lz4 ...``."""
    msg = str(exc)
    name = type(exc).__name__
    text = msg if msg.startswith(name) else f"{name}: {msg}" if msg else name
    text = " ".join(text.split())  # one line
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 3] + "..."


def undecodable_record(
    topic: str, partition: int, first: int, last: int, timestamp: int | None,
    timestamp_type: int, error: str,
) -> Any:
    """The sentinel that stands for the undecodable offsets ``first``..``last``."""
    headers = ((UNDECODABLE_HEADER, error.encode("ascii", "backslashreplace")),
               (UNDECODABLE_OFFSETS_HEADER, f"{first}-{last}".encode()))
    return ConsumerRecord(topic, partition, last, timestamp, timestamp_type, None, None,
                          None, -1, -1, headers)


def undecodable_info(record: Any) -> tuple[str, int, int] | None:
    """``(error, first offset, last offset)`` if ``record`` is a sentinel, else None.

    Anything with ``value`` and ``headers`` attributes will do (aiokafka or faust records)."""
    if getattr(record, "value", None) is not None:
        return None
    error: bytes | None = None
    offsets: bytes | None = None
    for name, value in getattr(record, "headers", None) or ():
        if name == UNDECODABLE_HEADER:
            error = value
        elif name == UNDECODABLE_OFFSETS_HEADER:
            offsets = value
    if error is None or offsets is None:
        return None
    first, _, last = offsets.decode("ascii", "replace").partition("-")
    try:
        return error.decode("ascii", "replace"), int(first), int(last)
    except ValueError:
        return None


class _Throttle:
    """Per key, at most one log line every ``every_s`` seconds; counts what it held back."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """None: stay quiet; else log now, saying how many were held back before this one."""
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next[key] = now + self.every_s
        return self._held.pop(key, 0)


class SafePartitionRecords(kafka_fetcher.PartitionRecords):  # type: ignore[misc]
    """aiokafka's ``PartitionRecords`` that skips undecodable batches (see the module)."""

    # Set on the class install_safe_fetch() makes; None: log every undecodable batch.
    throttle: ClassVar[_Throttle | None] = None
    next_fetch_offset: int  # set by aiokafka's __init__

    def _unpack_records(self) -> Iterator[Any]:
        # aiokafka 0.14.0's loop, step by step; the difference is marked SAFETOUR.
        # NOTE: if the batch is not compressed it's equal to 1 record in v0 and v1.
        tp = self._tp
        records = self._records
        while records.has_next():
            next_batch = records.next_batch()
            try:  # SAFETOUR: an error in this batch skips this batch only
                batch_records = self._open_batch(next_batch)
            except Exception as exc:
                yield from self._skip_batch(next_batch, exc)
                continue
            if batch_records is None:  # aborted or control batch: skipped, as aiokafka does
                continue
            failed: Exception | None = None
            while True:
                try:  # SAFETOUR: decoding errors of the records caught, never the yield
                    record = next(batch_records)
                    # It's OK for the offset to be larger than the current partition. It
                    # will happen in compacted topics.
                    if record.offset < self.next_fetch_offset:
                        # Probably just a compressed messageset, it's ok to skip.
                        continue
                    consumer_record = self._consumer_record(tp, record)
                except StopIteration:
                    break
                except Exception as exc:
                    failed = exc
                    break
                self.next_fetch_offset = record.offset + 1
                yield consumer_record
            if failed is not None:  # SAFETOUR
                yield from self._skip_batch(next_batch, failed)
                continue
            # Message format v2 preserves the last offset in a batch even if the last
            # record is removed through compaction. By using the next offset computed from
            # the last offset in the batch, we ensure that the offset of the next fetch
            # will point to the next batch, which avoids unnecessary re-fetching of the
            # same batch (in the worst case, the consumer could get stuck fetching the
            # same batch repeatedly).
            self.next_fetch_offset = next_batch.next_offset

    def _open_batch(self, next_batch: Any) -> Iterator[Any] | None:
        """aiokafka's checks before a batch's records: CRC, aborted transactions, control
        batches. The records' iterator, or None for a batch to skip without records."""
        tp = self._tp
        if self._check_crcs and not next_batch.validate_crc():
            raise kafka_errors.CorruptRecordException(f"Invalid CRC - {tp}")

        if (
            self._isolation_level == kafka_fetcher.READ_COMMITTED
            and next_batch.producer_id is not None
        ):
            self._consume_aborted_up_to(next_batch.base_offset)

            if next_batch.is_control_batch and self._contains_abort_marker(next_batch):
                # Using `discard` instead of `remove`, because Kafka may return an abort
                # marker for an otherwise empty topic-partition.
                self._aborted_producers.discard(next_batch.producer_id)

            if next_batch.is_transactional and next_batch.producer_id in self._aborted_producers:
                kafka_fetcher.log.debug(
                    "Skipping aborted record batch from partition %s with"
                    " producer_id %s and offsets %s to %s",
                    tp, next_batch.producer_id, next_batch.base_offset,
                    next_batch.next_offset - 1,
                )
                self.next_fetch_offset = next_batch.next_offset
                return None

        # We skip control batches no matter the isolation level
        if next_batch.is_control_batch:
            self.next_fetch_offset = next_batch.next_offset
            return None
        records: Iterator[Any] = iter(next_batch)
        return records

    def _skip_batch(self, batch: Any, exc: Exception) -> tuple[Any, ...]:
        """Move past ``batch``; the sentinel for its offsets not handed out yet, if any."""
        tp = self._tp
        last = batch.next_offset - 1
        first = max(self.next_fetch_offset, batch.base_offset)
        self.next_fetch_offset = batch.next_offset
        text = error_text(exc)
        held = self.throttle.admit(text) if self.throttle is not None else 0
        if held is not None:
            log.warning(
                "%s[%d]: skipped the record batch at offsets %d-%d, which this process "
                "cannot decode (%s)%s", tp.topic, tp.partition, batch.base_offset, last, text,
                f"; {held} more such batches since the last warning" if held else "")
        if first > last:  # every record was handed out before the error
            return ()
        ts = getattr(batch, "first_timestamp", None)
        return (undecodable_record(
            tp.topic, tp.partition, first, last,
            ts if isinstance(ts, int) and ts >= 0 else None,
            int(getattr(batch, "timestamp_type", 0) or 0), text),)


def install_safe_fetch() -> None:
    """Make every aiokafka consumer of this process skip undecodable batches (idempotent)."""
    current = kafka_fetcher.PartitionRecords
    if isinstance(current, type) and issubclass(current, SafePartitionRecords):
        return
    installed = type("SafePartitionRecords", (SafePartitionRecords,),
                     {"throttle": _Throttle(LOG_EVERY_S), "__module__": __name__})
    kafka_fetcher.PartitionRecords = installed
