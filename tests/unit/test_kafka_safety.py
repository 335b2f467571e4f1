"""Undecodable record batches (agents/kafka_safety.py), on real aiokafka record batches.

The batches are built with aiokafka's own ``DefaultRecordBatchBuilder`` and read through
aiokafka's ``MemoryRecords``, ``FetchResult`` and ``Fetcher.fetched_records`` (the code under
``getmany``), so the tests exercise the client's real decoding, not a model of it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from unittest import mock

import aiokafka.codec
import pytest
from aiokafka.consumer import fetcher as kafka_fetcher
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from agents import cli
from agents.kafka_safety import (
    UNDECODABLE_HEADER,
    UNDECODABLE_OFFSETS_HEADER,
    SafePartitionRecords,
    install_safe_fetch,
    undecodable_info,
)
from agents.worker.transport import RecordBatch, fold

PLAIN = kafka_fetcher.PartitionRecords  # aiokafka's own, as imported (never installed here)
TP = TopicPartition("sensors", 3)
NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
TS = 1_771_150_000_000
HAS_LZ4 = aiokafka.codec.has_lz4


def batch(base: int, values: list[bytes], codec: int = NONE, ts: int = TS) -> bytearray:
    """One v2 record batch at offsets ``base``.., as a broker would hand it out."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 20)
    for i, v in enumerate(values):
        b.append(i, timestamp=ts + i, key=b"zone", value=v, headers=[])
    # Built by a producer that has the codec (this process may be pretending not to).
    with mock.patch.object(aiokafka.codec, "has_lz4", HAS_LZ4):
        raw = bytearray(b.build())
    struct.pack_into(">q", raw, 0, base)  # the base offset is outside the CRC
    return raw


def corrupt(raw: bytearray) -> bytearray:
    """Flip one byte of the records: the CRC no longer matches."""
    raw[-3] ^= 0xFF
    return raw


def unknown_codec(raw: bytearray) -> bytearray:
    """Compression id 5 (none exists), with a CRC that matches it."""
    attributes_at, crc_at = 21, 17  # BaseOffset q, Length i, Epoch i, Magic b, CRC I
    raw[attributes_at + 1] = (raw[attributes_at + 1] & ~0x07) | 0x05
    struct.pack_into(">I", raw, crc_at, calc_crc32c(bytes(raw[attributes_at:])))
    return raw


def records(cls: Any, *batches: bytearray, fetch_offset: int = 0,
            value_deserializer: Callable[[bytes], Any] | None = None) -> Any:
    data = b"".join(bytes(b) for b in batches)
    return cls(TP, MemoryRecords(data), None, fetch_offset, None, value_deserializer, True,
               kafka_fetcher.READ_UNCOMMITTED)


def three_batches(bad: bytearray) -> tuple[bytearray, ...]:
    return (batch(0, [b"a0", b"a1", b"a2"]), bad, batch(6, [b"c6", b"c7"], GZIP, ts=TS + 60))


@pytest.fixture
def no_lz4(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process has no lz4 library (what a missing cramjam looks like to aiokafka)."""
    monkeypatch.setattr(aiokafka.codec, "has_lz4", lambda: False)


BAD = {
    "lz4 library missing": (lambda: batch(3, [b"b3", b"b4", b"b5"], LZ4, ts=TS + 30),
                            "UnsupportedCodecError: Libraries for lz4 compression codec "
                            "not found"),
    "CRC mismatch": (lambda: corrupt(batch(3, [b"b3", b"b4", b"b5"], ts=TS + 30)),
                     "CorruptRecordException"),
    "unknown codec": (lambda: unknown_codec(batch(3, [b"b3", b"b4", b"b5"], ts=TS + 30)),
                      "UnsupportedCodecError: Unknown compression codec 0x05"),
}


@pytest.mark.usefixtures("no_lz4")
@pytest.mark.parametrize("case", sorted(BAD))
def test_an_undecodable_batch_becomes_one_sentinel_between_the_good_records(case: str) -> None:
    make, error = BAD[case]
    recs = records(SafePartitionRecords, *three_batches(make()))
    out = list(recs)  # nothing raises
    assert [r.offset for r in out] == [0, 1, 2, 5, 6, 7]
    assert [r.value for r in out] == [b"a0", b"a1", b"a2", None, b"c6", b"c7"]
    sentinel = out[3]
    assert (sentinel.topic, sentinel.partition, sentinel.key) == ("sensors", 3, None)
    assert sentinel.timestamp == TS + 30  # the bad batch's first timestamp
    names = [h[0] for h in sentinel.headers]
    assert names == [UNDECODABLE_HEADER, UNDECODABLE_OFFSETS_HEADER]
    assert dict(sentinel.headers)[UNDECODABLE_OFFSETS_HEADER] == b"3-5"
    info = undecodable_info(sentinel)
    assert info is not None
    text, first, last = info
    assert (first, last) == (3, 5)
    assert text.startswith(error)
    assert text.isascii()
    assert "\n" not in text
    assert [undecodable_info(r) for r in out if r is not sentinel] == [None] * 5
    assert recs.next_fetch_offset == 8  # the next fetch starts after the good batch


@pytest.mark.usefixtures("no_lz4")
def test_the_same_batches_stop_plain_aiokafka() -> None:
    """The defect: plain aiokafka raises at the bad batch, after the good records before it."""
    recs = records(PLAIN, *three_batches(BAD["lz4 library missing"][0]()))
    seen = []
    with pytest.raises(UnsupportedCodecError):
        seen.extend(r.offset for r in recs)
    assert seen == [0, 1, 2]
    assert recs.next_fetch_offset == 3  # and it will stop there again at the next fetch


@pytest.mark.usefixtures("no_lz4")
def test_a_fetch_that_starts_inside_a_bad_batch_names_only_the_offsets_after_it() -> None:
    recs = records(SafePartitionRecords, batch(3, [b"b3", b"b4", b"b5"], LZ4), fetch_offset=4)
    (sentinel,) = list(recs)
    assert undecodable_info(sentinel) == (
        "UnsupportedCodecError: Libraries for lz4 compression codec not found", 4, 5)
    assert sentinel.offset == 5
    assert recs.next_fetch_offset == 6


def test_records_handed_out_before_a_failure_inside_a_batch_stay_handed_out() -> None:
    def value(raw: bytes) -> bytes:
        if raw == b"bad":
            raise ValueError("cannot read b'bad'\nsecond line é")
        return raw

    recs = records(SafePartitionRecords, batch(0, [b"a0", b"a1", b"bad", b"a3"]),
                   batch(4, [b"b4"]), value_deserializer=value)
    out = list(recs)
    assert [(r.offset, r.value) for r in out] == [
        (0, b"a0"), (1, b"a1"), (3, None), (4, b"b4")]
    text, first, last = undecodable_info(out[2]) or ("", 0, 0)
    assert (first, last) == (2, 3)  # the records not handed out: the failing one onwards
    assert text == r"ValueError: cannot read b'bad' second line \xe9"


@pytest.mark.parametrize("codec", [NONE, GZIP, SNAPPY, LZ4, ZSTD])
def test_every_codec_decodes_in_this_process(codec: int) -> None:
    """cramjam is installed with the project (pyproject: aiokafka's extras)."""
    out = list(records(SafePartitionRecords, batch(0, [b"x" * 100, b"y" * 100], codec)))
    assert [r.value for r in out] == [b"x" * 100, b"y" * 100]


class _State:
    def __init__(self) -> None:
        self.position = 0
        self.paused = False

    def consumed_to(self, offset: int) -> None:
        self.position = offset


class _Assignment:
    active = True

    def __init__(self, tps: list[TopicPartition]) -> None:
        self.states = {tp: _State() for tp in tps}

    def state_value(self, tp: TopicPartition) -> _State:
        return self.states[tp]


def getmany(cls: Any) -> tuple[Any, _Assignment]:
    """aiokafka's ``Fetcher.fetched_records`` (what ``getmany`` returns) over two buffered
    fetches: partition 1 is good, partition 3 has a bad batch after good records."""
    good = TopicPartition("sensors", 1)
    assignment = _Assignment([good, TP])
    buffered = {
        good: kafka_fetcher.FetchResult(
            good, assignment=assignment, backoff=0,
            partition_records=cls(good, MemoryRecords(bytes(batch(0, [b"g0", b"g1"]))), None,
                                  0, None, None, True, kafka_fetcher.READ_UNCOMMITTED)),
        TP: kafka_fetcher.FetchResult(
            TP, assignment=assignment, backoff=0,
            partition_records=records(cls, *three_batches(BAD["lz4 library missing"][0]()))),
    }
    fetcher = SimpleNamespace(_subscriptions=SimpleNamespace(reassignment_in_progress=False),
                              _records=buffered, _notify=lambda fut: None,
                              _wait_consume_future=None)
    return fetcher, assignment


@pytest.mark.usefixtures("no_lz4")
def test_plain_getmany_raises_and_loses_the_records_it_had_already_taken() -> None:
    fetcher, assignment = getmany(PLAIN)
    with pytest.raises(UnsupportedCodecError):
        asyncio.run(kafka_fetcher.Fetcher.fetched_records(fetcher, ()))
    # Partition 1's two records were taken and its position moved past them, but the caller
    # got an exception instead: they are skipped for good.
    assert assignment.states[TopicPartition("sensors", 1)].position == 2


@pytest.mark.usefixtures("no_lz4")
def test_safe_getmany_returns_every_good_record_and_the_sentinel() -> None:
    fetcher, assignment = getmany(SafePartitionRecords)
    got = asyncio.run(kafka_fetcher.Fetcher.fetched_records(fetcher, ()))
    assert {tp.partition: [r.offset for r in recs] for tp, recs in got.items()} == {
        1: [0, 1], 3: [0, 1, 2, 5, 6, 7]}
    assert {tp.partition: s.position for tp, s in assignment.states.items()} == {1: 2, 3: 8}


def test_install_swaps_the_fetchers_class_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_fetcher, "PartitionRecords", PLAIN)  # restored afterwards
    install_safe_fetch()
    installed = kafka_fetcher.PartitionRecords
    assert issubclass(installed, SafePartitionRecords)
    assert issubclass(installed, PLAIN)
    install_safe_fetch()
    assert kafka_fetcher.PartitionRecords is installed


def test_every_safetour_command_installs_it_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_fetcher, "PartitionRecords", PLAIN)
    with pytest.raises(SystemExit):
        cli.main(["--help"])  # even before the arguments are parsed
    assert issubclass(kafka_fetcher.PartitionRecords, SafePartitionRecords)


@pytest.mark.usefixtures("no_lz4")
def test_the_installed_class_warns_once_a_minute_per_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kafka_fetcher, "PartitionRecords", PLAIN)
    install_safe_fetch()
    cls = kafka_fetcher.PartitionRecords
    bad = [batch(10 * i, [b"b"], LZ4) for i in range(5)]
    with caplog.at_level(logging.WARNING, "safetour.kafka"):
        out = list(records(cls, *bad))
    assert len(out) == 5  # one sentinel per bad batch
    warnings = [r.getMessage() for r in caplog.records if r.name == "safetour.kafka"]
    assert len(warnings) == 1
    assert "sensors[3]: skipped the record batch at offsets 0-0" in warnings[0]


@pytest.mark.usefixtures("no_lz4")
def test_the_batching_transport_hands_the_sentinel_on_as_a_value_none_record() -> None:
    out = list(records(SafePartitionRecords, *three_batches(BAD["lz4 library missing"][0]())))
    ((folded,),) = fold({TP: out}, frozenset({"sensors"})).values()
    assert isinstance(folded.value, RecordBatch)
    assert folded.offset == 7
    (sentinel,) = [r for r in folded.value if r.value is None]
    assert undecodable_info(sentinel) is not None


def test_undecodable_info_wants_both_headers_and_no_value() -> None:
    def rec(value: bytes | None, *headers: tuple[str, bytes]) -> Any:
        return SimpleNamespace(value=value, headers=headers)

    both = ((UNDECODABLE_HEADER, b"E: x"), (UNDECODABLE_OFFSETS_HEADER, b"7-9"))
    assert undecodable_info(rec(None, *both)) == ("E: x", 7, 9)
    assert undecodable_info(rec(b"{}", *both)) is None
    assert undecodable_info(rec(None, both[0])) is None
    assert undecodable_info(rec(None, both[0], (UNDECODABLE_OFFSETS_HEADER, b"7"))) is None
    assert undecodable_info(rec(None)) is None
    assert undecodable_info(SimpleNamespace(value=None, headers=None)) is None


def test_corrupt_record_exception_is_what_aiokafka_raises_for_a_crc_mismatch() -> None:
    """Guards the premise of the CRC case above."""
    with pytest.raises(CorruptRecordException):
        list(records(PLAIN, corrupt(batch(0, [b"a"]))))
