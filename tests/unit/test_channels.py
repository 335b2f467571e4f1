"""The channel runner (agents/delivery/channels.py): dedup by (alert_id, seq), critical ahead of
retries, no giving up while an episode is open, bounded memory with back-pressure, the
delayed marker, offsets that commit only what finished."""

from __future__ import annotations

import asyncio
import logging
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
import pytest

from agents.delivery.channel_queue import ChannelQueue, Job
from agents.delivery.channels import ChannelRunner
from agents.delivery.ledger import Episodes, OffsetBook
from agents.delivery.notify import (
    MemoryNotifier,
    Outcome,
    Result,
    RetryPolicy,
    Route,
    idempotency_key,
)
from agents.metrics import Metrics
from agents.rejects import InternalRejects


class TP(NamedTuple):
    topic: str
    partition: int


P0 = TP("t.alerts", 0)
NOW = 1_800_000_000.0


def alert(n: int, level: str = "critical", *, seq: int | None = 1, status: str = "raised",
          zone: str = "z1", ts_s: float = NOW) -> dict[str, Any]:
    a: dict[str, Any] = {
        "alert_id": f"{zone}:{n}:ab", "zone_id": zone, "level": level,
        "previous_level": "normal", "status": status,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_s)) + ".000Z",
        "message": {"th": "ท", "en": "e"}}
    if seq is not None:
        a["seq"] = seq
    return a


def resolution(n: int, seq: int, zone: str = "z1") -> dict[str, Any]:
    return alert(n, "normal", seq=seq, status="resolved", zone=zone) | {
        "previous_level": "critical"}


@dataclass
class Scripted:
    """A notifier whose answer per call is decided by ``answer(alert, key)``; records
    the order of deliveries."""

    answer: Callable[[Mapping[str, Any], str], Awaitable[Result]]
    channel: str = "scripted"
    sent: list[str] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    delayed: dict[str, int | None] = field(default_factory=dict)

    async def send(self, alert: Mapping[str, Any], key: str, *,
                   delayed_s: int | None = None) -> Result:
        self.sent.append(key)
        result = await self.answer(alert, key)
        if result.outcome is Outcome.DELIVERED:
            self.delivered.append(key)
            self.delayed[key] = delayed_s
        return result


def runner(notifier: Any, *, policy: RetryPolicy | None = None, bound: int = 100,
           senders: int = 1, wall: float = NOW) -> tuple[ChannelRunner, list[dict[str, Any]]]:
    dlq: list[dict[str, Any]] = []

    async def dead_letter(key: bytes | None, value: bytes) -> None:
        dlq.append(orjson.loads(value))

    metrics = Metrics()
    r = ChannelRunner(notifier, Route("elevated"), policy or RetryPolicy(base_s=0.01, cap_s=0.05),
                      dead_letter, metrics, InternalRejects.of("notify-t", metrics,
                                                               logging.getLogger("test")),
                      queue_bound=bound, senders=senders, wall_clock=lambda: wall)
    return r, dlq


async def poll(cond: Callable[[], object], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def running(r: ChannelRunner) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(r.send_forever()) for _ in range(r.senders)]


async def stopped(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_the_key_is_alert_id_and_seq_when_seq_is_given() -> None:
    assert idempotency_key(alert(1, seq=3)) == "z1:1:ab:3"
    assert idempotency_key(alert(1, seq=3) | {"seq": 3.0}) == "z1:1:ab:3"
    # Two messages of an episode that share status and ts are still told apart by seq.
    assert idempotency_key(alert(1, seq=3)) != idempotency_key(alert(1, seq=4))
    legacy = alert(1, seq=None)
    assert idempotency_key(legacy) == f"z1:1:ab:raised:{legacy['ts']}"


@pytest.mark.asyncio
async def test_a_replayed_alert_is_delivered_once_and_its_offset_still_commits() -> None:
    twin = MemoryNotifier()
    r, dlq = runner(twin)
    tasks = await running(r)
    # The worker crashed and replayed: the same (alert_id, seq) at later offsets.
    records = [alert(1, seq=1), alert(1, "high", seq=2), alert(1, seq=1), alert(1, "high", seq=2),
               resolution(1, 3), resolution(1, 3), alert(1, seq=1)]
    for offset, a in enumerate(records):
        await r.accept(P0, offset, b"z1", orjson.dumps(a))
    await poll(lambda: r.queue.held == 0)
    await stopped(tasks)
    assert twin.calls == 3
    assert sorted(twin.delivered) == ["z1:1:ab:1", "z1:1:ab:2", "z1:1:ab:3"]
    assert r.duplicates == 4
    assert r.book.committable() == {P0: len(records)}
    assert dlq == []


def test_dedup_memory_is_pruned_on_resolution_and_capped() -> None:
    ep = Episodes(open_cap=3, closed_cap=2)
    for n in range(10):
        assert ep.take(f"a{n}", f"a{n}:1", resolved=False)
        assert not ep.take(f"a{n}", f"a{n}:1", resolved=False)
    assert ep.episodes == 3
    assert ep.evicted == 7
    assert ep.take("a9", "a9:2", resolved=True)  # resolved: moved to the closed ring
    assert not ep.is_open("a9")
    assert not ep.take("a9", "a9:2", resolved=True)  # a replay of a closed episode
    for n in range(20, 25):
        ep.take(f"a{n}", f"a{n}:1", resolved=True)
    assert ep.episodes <= 3 + 2
    assert len(ep) <= 5


@pytest.mark.asyncio
async def test_a_fresh_critical_goes_before_a_waiting_retry_of_a_lower_level() -> None:
    """Failed before: one deliver loop per channel retried the elevated alert to the end
    (or to the DLQ) before it even read the critical one."""
    tries: dict[str, int] = {}

    async def answer(a: Mapping[str, Any], key: str) -> Result:
        tries[key] = tries.get(key, 0) + 1
        if a["level"] == "elevated" and tries[key] <= 3:
            return Result(Outcome.RETRY, "HTTP 503", retry_after_s=0.2)
        return Result(Outcome.DELIVERED)

    hook = Scripted(answer)
    r, _ = runner(hook, policy=RetryPolicy(base_s=0.01, cap_s=0.01))
    tasks = await running(r)
    await r.accept(P0, 0, b"z1", orjson.dumps(alert(1, "elevated", zone="z1")))
    await poll(lambda: len(hook.sent) == 1)
    await r.accept(P0, 1, b"z2", orjson.dumps(alert(2, "critical", zone="z2")))
    await poll(lambda: len(hook.delivered) == 2)
    await stopped(tasks)
    assert hook.delivered == ["z2:2:ab:1", "z1:1:ab:1"]


@pytest.mark.asyncio
async def test_ready_alerts_go_by_level_then_age() -> None:
    q = ChannelQueue(10)
    for order, (level, rank) in enumerate([("elevated", 1), ("critical", 3), ("high", 2),
                                           ("critical", 3)]):
        await q.put(Job({}, f"{level}{order}", "x", rank, P0, order, None, order))
    got = [(await q.get()).key for _ in range(4)]
    assert got == ["critical1", "critical3", "high2", "elevated0"]


@pytest.mark.asyncio
async def test_an_open_episode_is_retried_past_max_attempts_and_dead_lettered_once_resolved(
) -> None:
    """Failed before: deliver gave up after max_attempts whatever the episode."""
    down = True

    async def answer(a: Mapping[str, Any], key: str) -> Result:
        return Result(Outcome.RETRY, "connection refused") if down else Result(
            Outcome.DELIVERED)

    hook = Scripted(answer)
    r, dlq = runner(hook, policy=RetryPolicy(max_attempts=2, base_s=0.001, cap_s=0.005))
    tasks = await running(r)
    await r.accept(P0, 0, b"z1", orjson.dumps(alert(1)))
    await poll(lambda: len(hook.sent) >= 10)  # five times max_attempts, still trying
    assert dlq == []
    assert r.queue.held == 1
    down = False
    await poll(lambda: hook.delivered == ["z1:1:ab:1"])
    # A second episode: its resolution arrives while its raise is still failing.
    down = True
    await r.accept(P0, 1, b"z1", orjson.dumps(alert(2)))
    await poll(lambda: hook.sent.count("z1:2:ab:1") >= 3)
    await r.accept(P0, 2, b"z1", orjson.dumps(resolution(2, 2)))
    await poll(lambda: len(dlq) == 2)  # the raise and the resolution, both failed
    await stopped(tasks)
    assert {d["idempotency_key"] for d in dlq} == {"z1:2:ab:1", "z1:2:ab:2"}
    assert all(d["outcome"] == "failed" and "episode resolved" in d["reason"] for d in dlq)
    assert r.queue.held == 0
    assert r.book.committable() == {P0: 3}


@pytest.mark.asyncio
async def test_a_rejected_alert_is_dead_lettered_at_once() -> None:
    async def answer(a: Mapping[str, Any], key: str) -> Result:
        return Result(Outcome.REJECTED, "HTTP 400")

    hook = Scripted(answer)
    r, dlq = runner(hook)
    tasks = await running(r)
    await r.accept(P0, 0, b"z1", orjson.dumps(alert(1)))
    await poll(lambda: len(dlq) == 1)
    await stopped(tasks)
    assert (dlq[0]["outcome"], dlq[0]["attempts"], len(hook.sent)) == ("rejected", 1, 1)


@pytest.mark.asyncio
async def test_the_first_delivery_after_an_outage_releases_every_waiting_retry() -> None:
    down = True

    async def answer(a: Mapping[str, Any], key: str) -> Result:
        return Result(Outcome.RETRY, "down") if down else Result(Outcome.DELIVERED)

    hook = Scripted(answer)
    # Long backoffs: without the release, the waiting alerts would sit for up to 60 s.
    r, _ = runner(hook, policy=RetryPolicy(base_s=30, cap_s=60), senders=2)
    tasks = await running(r)
    for n in range(5):
        await r.accept(P0, n, b"z1", orjson.dumps(alert(n)))
    await poll(lambda: len(hook.sent) == 5)
    down = False
    await r.accept(P0, 5, b"z1", orjson.dumps(alert(5)))
    await poll(lambda: len(hook.delivered) == 6, within=3)
    await stopped(tasks)


@pytest.mark.asyncio
async def test_a_late_alert_is_marked_delayed() -> None:
    twin = MemoryNotifier()
    r, _ = runner(twin, wall=NOW + 95)
    tasks = await running(r)
    await r.accept(P0, 0, b"z1", orjson.dumps(alert(1, ts_s=NOW)))          # 95 s late
    await r.accept(P0, 1, b"z1", orjson.dumps(alert(2, ts_s=NOW + 80)))     # 15 s: on time
    await poll(lambda: len(twin.delivered) == 2)
    await stopped(tasks)
    assert twin.delayed == {"z1:1:ab:1": 95}


class FakeConsumer:
    """The part of an aiokafka consumer the runner uses, over an in-memory partition."""

    def __init__(self, values: list[bytes]) -> None:
        self.values = values
        self.position = 0
        self._paused: set[TP] = set()
        self.paused_polls = 0
        self.committed: dict[TP, int] = {}

    def assignment(self) -> set[TP]:
        return {P0}

    def pause(self, *tps: TP) -> None:
        self._paused |= set(tps)

    def resume(self, *tps: TP) -> None:
        self._paused -= set(tps)

    def paused(self) -> set[TP]:
        return set(self._paused)

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None
                      ) -> dict[TP, list[Any]]:
        if P0 in self._paused or self.position >= len(self.values):
            self.paused_polls += P0 in self._paused
            await asyncio.sleep(min(timeout_ms, 20) / 1000)
            return {}
        n = min(max_records or 500, len(self.values) - self.position)

        @dataclass
        class Rec:
            offset: int
            key: bytes
            value: bytes
            timestamp: int

        out = [Rec(self.position + i, b"z", self.values[self.position + i],
                   int(NOW * 1000)) for i in range(n)]
        self.position += n
        return {P0: out}

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        self.committed.update(offsets)


@pytest.mark.asyncio
async def test_a_receiver_that_never_answers_holds_at_most_the_bound_and_pauses_the_consumer(
) -> None:
    """10,000 alerts for a receiver that never answers: the channel holds at most its
    bound (the consumer pauses, nothing is dropped), memory stays flat, and a stop commits
    nothing it did not deliver."""
    never = asyncio.Event()

    async def answer(a: Mapping[str, Any], key: str) -> Result:
        await never.wait()
        return Result(Outcome.DELIVERED)

    hook = Scripted(answer)
    bound = 200
    r, dlq = runner(hook, bound=bound, senders=4)
    values = [orjson.dumps(alert(n, zone=f"z{n % 7}")) for n in range(10_000)]
    consumer = FakeConsumer(values)
    stop = asyncio.Event()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        serve = asyncio.create_task(r.serve(consumer, stop, grace_s=0.1, commit_every_s=0.05))
        await poll(lambda: consumer.paused_polls >= 2)
        held_at_pause = r.queue.held
        grown = tracemalloc.get_traced_memory()[1] - before
        stop.set()
        await asyncio.wait_for(serve, 5)
    finally:
        tracemalloc.stop()
    assert held_at_pause == bound
    assert r.max_held == bound
    assert consumer.position <= bound + 1  # fetched no more than it had room for
    assert len(hook.sent) == 4  # one send in flight per sender, the rest queued
    assert grown < 2_000_000, grown  # bytes, 10,000 alerts arriving: ~200 held
    assert consumer.committed.get(P0, 0) == 0  # nothing delivered: nothing committed
    assert dlq == []


def test_offsets_commit_the_lowest_unfinished_one() -> None:
    book = OffsetBook()
    for off in range(5):
        book.take(P0, off)
    book.skip(P0, 5)
    book.finish(P0, 0)
    book.finish(P0, 2)
    assert book.committable() == {P0: 1}
    book.committed({P0: 1})
    assert book.committable() == {}
    for off in (1, 3, 4):
        book.finish(P0, off)
    assert book.committable() == {P0: 6}
    book.take(P0, 6)
    book.untake(P0, 6)  # handed back at a stop: read again
    assert book.committable() == {P0: 6}


@dataclass
class GroupMember:
    """What the rebalance listener and :meth:`ChannelRunner.commit` use of a consumer."""

    owned: set[Any] = field(default_factory=set)
    commits: list[dict[Any, int]] = field(default_factory=list)

    def assignment(self) -> set[Any]:
        return set(self.owned)

    async def commit(self, offsets: Mapping[Any, int]) -> None:
        self.commits.append(dict(offsets))


def switchable() -> tuple[Scripted, Callable[[bool], None]]:
    """A receiver that fails (503) until switched on."""
    up = [False]

    async def answer(a: Mapping[str, Any], key: str) -> Result:
        return Result(Outcome.DELIVERED) if up[0] else Result(Outcome.RETRY, "HTTP 503")

    def switch(on: bool) -> None:
        up[0] = on
    return Scripted(answer), switch


THREE = [orjson.dumps(alert(n, zone=f"z{n}")) for n in range(3)]


async def revoke(r: ChannelRunner, consumer: GroupMember, tp: Any) -> None:
    from agents.delivery.channel_consumer import _Rebalance  # noqa: PLC0415

    await _Rebalance(r, consumer).on_partitions_revoked({tp})
    consumer.owned.discard(tp)


@pytest.mark.asyncio
async def test_a_partition_that_comes_back_delivers_what_was_queued_when_it_went() -> None:
    """Failed before: the re-read copies were skipped as repeats of the dropped queue's keys
    and their offsets committed, with nothing delivered (a crash then lost them)."""
    hook, up = switchable()
    r, _ = runner(hook, policy=RetryPolicy(base_s=0.01, cap_s=0.02))
    consumer = GroupMember({P0})
    tasks = await running(r)
    for off, value in enumerate(THREE):
        await r.accept(P0, off, b"k", value)
    await poll(lambda: len(hook.sent) >= 3)
    await revoke(r, consumer, P0)
    assert consumer.commits == [{P0: 0}]  # nothing finished
    assert r.queue.held <= r.in_flight  # the queued ones are dropped
    consumer.owned.add(P0)  # assigned again: read again from the committed offset
    for off, value in enumerate(THREE):
        await r.accept(P0, off, b"k", value)
    assert r.duplicates == 0
    assert r.book.committable() == {P0: 0}  # nothing commits past an undelivered alert
    up(True)
    await poll(lambda: len(hook.delivered) == 3)
    await poll(lambda: r.queue.held == 0)
    await stopped(tasks)
    assert sorted(hook.delivered) == [f"z{n}:{n}:ab:1" for n in range(3)]
    assert r.book.committable() == {P0: 3}


@pytest.mark.asyncio
async def test_after_a_revoke_the_new_owner_delivers_and_the_old_one_does_not() -> None:
    """Two runners of one channel (one group): P0 moves from A to B with three alerts
    queued at A. Failed before: A kept them and sent them again once the receiver was
    back, while B (reading from the committed offset) sent them too."""
    hook_a, up_a = switchable()
    hook_b, up_b = switchable()
    a, _ = runner(hook_a, policy=RetryPolicy(base_s=0.01, cap_s=0.02))
    b, _ = runner(hook_b)
    consumer_a, consumer_b = GroupMember({P0}), GroupMember()
    tasks = await running(a) + await running(b)
    for off, value in enumerate(THREE):
        await a.accept(P0, off, b"k", value)
    await poll(lambda: len(hook_a.sent) >= 1)
    await revoke(a, consumer_a, P0)
    committed = consumer_a.commits[-1][P0]
    assert committed == 0
    consumer_b.owned.add(P0)
    up_b(True)
    for off, value in enumerate(THREE[committed:], start=committed):
        await b.accept(P0, off, b"k", value)
    await poll(lambda: len(hook_b.delivered) == 3)
    up_a(True)  # A's receiver is back: A holds nothing to send (an in-flight try ends)
    await poll(lambda: a.queue.held == 0)
    await stopped(tasks)
    assert hook_a.delivered == []
    assert a.book.committable() == {}
    assert b.book.committable() == {P0: 3}


@pytest.mark.asyncio
async def test_a_send_in_flight_at_the_revoke_is_adopted_by_the_copy_read_again() -> None:
    """The partition comes back while one of its sends is still in flight: the re-read
    copy takes over that send, so it commits once delivered, and is not sent twice."""
    release = asyncio.Event()
    answers = [Result(Outcome.RETRY, "HTTP 503"), Result(Outcome.DELIVERED)]

    async def answer(a: Mapping[str, Any], key: str) -> Result:
        await release.wait()
        return answers.pop(0) if answers else Result(Outcome.DELIVERED)

    hook = Scripted(answer)
    r, _ = runner(hook, policy=RetryPolicy(base_s=0.001, cap_s=0.002))
    consumer = GroupMember({P0})
    tasks = await running(r)
    await r.accept(P0, 0, b"k", THREE[0])
    await poll(lambda: r.in_flight == 1)
    await revoke(r, consumer, P0)
    consumer.owned.add(P0)
    assert await r.accept(P0, 0, b"k", THREE[0])  # adopted, not a repeat
    assert r.book.committable() == {P0: 0}
    release.set()  # the first try fails: the adopted job is retried, then delivered
    await poll(lambda: hook.delivered == ["z0:0:ab:1"])
    await poll(lambda: r.queue.held == 0)
    await stopped(tasks)
    assert r.book.committable() == {P0: 1}
    assert len(hook.sent) == 2


@pytest.mark.asyncio
async def test_a_failed_send_of_a_revoked_partition_is_not_retried_here() -> None:
    release = asyncio.Event()

    async def answer(a: Mapping[str, Any], key: str) -> Result:
        await release.wait()
        return Result(Outcome.RETRY, "HTTP 503")

    hook = Scripted(answer)
    r, dlq = runner(hook, policy=RetryPolicy(base_s=0.001, cap_s=0.002))
    tasks = await running(r)
    await r.accept(P0, 0, b"k", THREE[0])
    await poll(lambda: r.in_flight == 1)
    await revoke(r, GroupMember({P0}), P0)
    release.set()
    await poll(lambda: r.queue.held == 0)
    await stopped(tasks)
    assert len(hook.sent) == 1
    assert dlq == []
    # Not remembered as taken: should the partition return, the alert is sent again.
    assert await r.accept(P0, 0, b"k", THREE[0])


@pytest.mark.asyncio
async def test_queue_length_and_per_channel_counters_are_exported() -> None:
    from prometheus_client import generate_latest  # noqa: PLC0415

    hook, up = switchable()
    r, _ = runner(hook, policy=RetryPolicy(base_s=0.001, cap_s=0.002))
    tasks = await running(r)
    for off, value in enumerate(THREE):
        await r.accept(P0, off, b"k", value)
    await r.accept(P0, 3, b"k", THREE[0])  # a repeat
    await poll(lambda: len(hook.sent) >= 4)
    text = generate_latest(r.metrics.registry).decode()
    assert 'safetour_notify_queue_length{channel="scripted"} 3.0' in text
    up(True)
    await poll(lambda: r.queue.held == 0)
    await stopped(tasks)
    text = generate_latest(r.metrics.registry).decode()
    assert 'safetour_notify_queue_length{channel="scripted"} 0.0' in text
    assert 'safetour_notifier_deliveries_total{channel="scripted"} 3.0' in text
    assert 'safetour_notifier_duplicates_total{channel="scripted"} 1.0' in text
    assert 'safetour_notifier_retries_total{channel="scripted"}' in text
