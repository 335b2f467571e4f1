"""Committing folded fetches (agents/worker/transport.py): faust's gap bookkeeping must let
one commit cover every fetch acked so far, not one fetch per commit."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from faust.types import TP
from intervaltree import IntervalTree

from agents.worker.transport import BatchingConsumer

TPX = TP("sensor", 0)


def consumer(committed: int | None) -> Any:
    """A BatchingConsumer with only the state faust's offset bookkeeping reads."""
    c: Any = object.__new__(BatchingConsumer)
    c._committed_offset = defaultdict(lambda: committed)
    c._gap = defaultdict(IntervalTree)
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    return c


async def receive_and_ack(c: Any, offsets: list[int], read: int | None) -> None:
    """What faust's ``_drain_messages`` does for each folded message (one per fetch, its
    offset the fetch's last), then the message's ack (``Consumer.ack``)."""
    r = read
    for off in offsets:
        if r is None or off >= r:
            if off - (r or 0) > 1 and r:
                await c._add_gap(TPX, r + 1, off)
            r = off
    for off in offsets:
        c._acked[TPX].append(off)
        c._acked_index[TPX].add(off)


def test_one_commit_covers_every_acked_fetch() -> None:
    async def go() -> None:
        c = consumer(None)
        # Fetches of 4 records: offsets 0-3, 4-7, ..., 396-399.
        await receive_and_ack(c, list(range(3, 400, 4)), None)
        assert c._new_offset(TPX) == 400  # faust's own gaps: 4, then 8, 12, ... per commit
        assert c._new_offset(TPX) is None

    asyncio.run(go())


def test_a_restart_commits_from_its_committed_offset_and_never_past_an_unacked_fetch() -> None:
    async def go() -> None:
        c = consumer(100)
        # Resumed at the committed 100 (faust's seek sets the read offset to it).
        await receive_and_ack(c, [103, 107], 100)
        assert c._new_offset(TPX) == 108
        # Two more fetches arrive; only the first is acked: the commit stops before the second.
        await c._add_gap(TPX, 109, 111)
        await c._add_gap(TPX, 112, 115)
        c._committed_offset = defaultdict(lambda: 108)
        c._acked[TPX].append(111)
        c._acked_index[TPX].add(111)
        assert c._new_offset(TPX) == 112

    asyncio.run(go())


def test_a_message_of_an_older_generation_is_never_committed() -> None:
    from types import SimpleNamespace  # noqa: PLC0415

    from faust.types.tuples import Message  # noqa: PLC0415

    c = consumer(None)
    c.app = SimpleNamespace(consumer_generation_id=5,
                            topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
    c._unacked_messages = set()
    c._n_acked = 0
    c._waiting_for_ack = None

    def message(offset: int, generation: int) -> Any:
        return Message("sensor", 0, offset, 0.0, 0, None, b"k", b"v", None, tp=TPX,
                       generation_id=generation)

    # Fetched before the rebalance, skipped (and acked) by faust after it.
    stale = message(9, 4)
    c._unacked_messages.add(stale)
    assert c.ack(stale) is False
    assert c._new_offset(TPX) is None
    assert not c._unacked_messages  # a rebalance does not wait for it
    # This generation's messages commit as before.
    assert c.ack(message(3, 5)) is True
    assert c._new_offset(TPX) == 4


def test_the_seek_back_to_committed_offsets_includes_a_committed_zero() -> None:
    """faust re-reads what it dropped during a rebalance by seeking to the committed offsets;
    aiokafka leaves out a committed 0, so a partition committed at 0 kept its position past
    the dropped records (a reading lost in test_chaos). BatchingConsumer seeks those to 0."""
    seeks: list[tuple[TP, int]] = []
    zero, five, never = TP("sensor", 0), TP("sensor", 1), TP("sensor", 2)

    class Thread:  # faust's consumer thread: aiokafka's seek_to_committed, and seek
        async def seek_to_committed(self) -> dict[TP, int | None]:
            return {zero: 0, five: 5, never: None}

        def seek(self, tp: TP, offset: int) -> None:
            seeks.append((tp, offset))

    c: Any = object.__new__(BatchingConsumer)
    c._thread = Thread()
    committed = asyncio.run(c.seek_to_committed())
    assert committed == {zero: 0, five: 5, never: None}  # what faust's perform_seek reads
    assert seeks == [(zero, 0)]  # aiokafka itself seeks to 5; None is the reset policy's
