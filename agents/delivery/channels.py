"""What ``safetour notify`` runs: one :class:`ChannelRunner` per channel.

Each channel has a consumer group of its own (``<app id>-notify-<channel>``), a bounded
priority queue of its own and senders of its own, so a slow or dead receiver holds back no
other channel (several channels in one process are independent tasks:
:func:`agents.delivery.channel_consumer.run_notify`).

- **At least once, offsets after delivery.** A record's offset counts as finished once its
  alert is delivered, rejected and dead-lettered, given up and dead-lettered, or skipped (not
  routed, a repeat, malformed and dead-lettered). A partition commits the lowest offset it
  still holds (:class:`agents.delivery.ledger.OffsetBook`), every second and on stop, so a
  restart re-reads only the unfinished alerts (and those after them).
- **Exactly once per (alert_id, seq) and channel.** :class:`agents.delivery.ledger.Episodes`
  remembers the idempotency keys (``alert_id:seq``, or ``alert_id:status:ts`` without
  ``seq``) of every open episode, and of the last ``closed_cap`` resolved ones; an alert taken
  before (a worker replay publishes identical alerts again), or held now, is skipped. A key
  counts as taken once its alert is delivered or dead-lettered, not when it is queued.
- **Rebalances lose nothing.** A revoked partition's queued alerts are dropped and
  forgotten (:meth:`ChannelRunner.revoke`), so its next reader (another worker, or this one
  when it comes back) delivers them; a send in flight finishes but is not retried here,
  unless its record is read again meanwhile (then that copy adopts it). Across a notifier
  restart, the receivers drop repeats by the same key (``Idempotency-Key``, LINE's retry
  key, the e-mail ``Message-ID``).
- **Every resolution reaches every channel that received the episode** (and a channel hears
  the first step of an episode below its minimum level): :class:`agents.delivery.routing.
  Receipts`. A (re)assigned partition is read again from ``route_lookback_s`` (24 h) ago
  up to its committed offset, without sending, to rebuild that state after a restart, and
  which open episodes a shelf held back (sent when it ends: agents/delivery/shelving.py).
- **Bounded memory, back-pressure.** At most ``queue_bound`` alerts are held (queued, waiting
  for a retry, in flight). When the queue is full the consumer pauses its partitions (and
  keeps polling, so it stays in the group) until there is room: nothing is dropped.
- **Critical first.** The senders take the ready alert of the highest level, then the
  oldest; an alert waiting for its backoff holds nothing back. The first delivery after
  failures releases every waiting retry (the receiver is back).
- **No giving up on an open episode.** Past ``RetryPolicy.max_attempts`` an alert whose
  episode is open keeps being retried at the capped backoff; it is dead-lettered (outcome
  ``failed``) only once its episode resolved, or at once when the receiver rejects it.
- **Delayed marker.** An alert sent more than ``delayed_after_s`` after its ``ts`` is sent
  with ``delayed_s`` (webhook header ``X-Safetour-Delayed``, a marker in LINE and e-mail).
- **Metrics** (agents/metrics.py): ``safetour_notify_queue_length`` and, per channel,
  delivered, retried, dead-lettered (``notifier_failures``), duplicates skipped and held back
  by a shelf (``notify_shelved``).
- **Clean stop.** On ``stop`` it fetches nothing more, gives sends in flight ``grace_s`` to
  finish, cancels the rest, commits what finished and leaves the group: the alerts it still
  held are read again by the next start.
"""


from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from schemas import Rejection, decode_alert, format_ts

from ..kafka_safety import undecodable_info
from ..logs import ThrottledLog
from ..shelves import Shelves
from .channel_queue import ChannelQueue, Job, priority_rank
from .ledger import TP, Episodes, OffsetBook
from .notify import (
    Notifier,
    Outcome,
    Result,
    RetryPolicy,
    Route,
    idempotency_key,
    lateness_s,
    notify_dlq_record,
)
from .routing import Receipts
from .shelving import holdable, suppressed

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..rejects import InternalRejects

log = logging.getLogger(__name__)

__all__ = ["DELAYED_AFTER_S", "GRACE_S", "QUEUE_BOUND", "SENDERS", "ChannelRunner", "DeadLetter"]
DeadLetter = Callable[[bytes | None, bytes], Awaitable[None]]

QUEUE_BOUND = 1000
SENDERS = 4
GRACE_S = 5.0
DELAYED_AFTER_S = 30.0


@dataclass
class ChannelRunner:
    """The queue, the dedup memory, the offsets and the senders of one channel."""

    notifier: Notifier
    route: Route
    policy: RetryPolicy
    dead_letter: DeadLetter
    metrics: Metrics
    rejects: InternalRejects
    queue_bound: int = QUEUE_BOUND
    senders: int = SENDERS
    delayed_after_s: float = DELAYED_AFTER_S
    wall_clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    queue: ChannelQueue = field(init=False)
    episodes: Episodes = field(default_factory=Episodes)
    book: OffsetBook = field(default_factory=OffsetBook)
    in_flight: int = field(default=0, init=False)
    max_held: int = field(default=0, init=False)
    duplicates: int = field(default=0, init=False)
    dead_lettered: int = field(default=0, init=False)
    _order: int = field(default=0, init=False)
    _pending: dict[str, Job] = field(default_factory=dict, init=False)
    _failing: bool = field(default=False, init=False)
    _stopping: bool = field(default=False, init=False)
    _quiet: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    shelves: Shelves | None = None
    shelved: int = field(default=0, init=False)
    _held_back: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.queue = ChannelQueue(self.queue_bound)
        self.receipts = Receipts(self.route)
        self._catching_up: dict[TP, int] = {}
        self.metrics.notify_queue_length.labels(self.channel).set_function(
            lambda: self.queue.held)
        self._quiet.set()
        self._outage = ThrottledLog(log)
        self._shelf_log = ThrottledLog(log)

    @property
    def channel(self) -> str:
        return self.notifier.channel

    # -- taking records ----------------------------------------------------------------
    async def accept(self, tp: TP, offset: int, key: bytes | None, value: bytes | None,
                     ts_ms: int | None = None) -> bool:
        """Take one record of the alerts topic (``ts_ms``: its Kafka timestamp): True when
        it was queued for delivery."""
        from ..rejects import malformed_dlq_record  # noqa: PLC0415

        until = self._catching_up.get(tp)
        if until is not None:
            if offset < until:  # finished before a restart: only its routing counts
                old = decode_alert(value)
                if not isinstance(old, Rejection):
                    routed_then = self.receipts.decide(old)
                    if routed_then is not None:
                        self._rebuild_held_back(routed_then, ts_ms)
                return False
            del self._catching_up[tp]
        alert = decode_alert(value)
        if isinstance(alert, Rejection):
            topic, partition = (tp.topic, tp.partition) if hasattr(tp, "topic") else (
                str(tp), 0)
            self.rejects.count(topic, alert, f"{partition}/{offset}")
            await self._write_dlq(key, orjson.dumps(malformed_dlq_record(
                alert, self.channel, value=value, topic=topic, partition=partition,
                offset=offset, key=key)))
            self.book.skip(tp, offset)
            return False
        routed = self.receipts.decide(alert)
        if routed is None:
            self.book.skip(tp, offset)
            return False
        alert = routed
        ikey = idempotency_key(alert)
        alert_id = str(alert["alert_id"])
        if self.shelves is not None:
            if alert.get("status") == "resolved":
                self._held_back.pop(alert_id, None)
            shelf = suppressed(alert, self.shelves, self.wall_clock())
            if shelf is not None:  # held back until the shelf ends (agents/delivery/shelving.py)
                self.shelved += 1
                self.metrics.notify_shelved.labels(self.channel).inc()
                self._held_back[alert_id] = alert
                self._shelf_log.note("%s: %s held back: zone %s shelved by %s until %s (%s)",
                                     self.channel, ikey, shelf.zone_id, shelf.by,
                                     format_ts(shelf.until_ms), shelf.reason)
                self.book.skip(tp, offset)
                return False
            self._held_back.pop(alert_id, None)  # its newest word goes out now
        self.episodes.note(alert_id, resolved=alert.get("status") == "resolved")
        held = self._pending.get(ikey)
        if held is not None and held.orphan:  # in flight from a revoked partition: adopt
            held.tp, held.offset, held.orphan = tp, offset, False
            self.book.take(tp, offset)
            return True
        if held is not None or self.episodes.seen(alert_id, ikey):
            self.duplicates += 1
            self.metrics.notifier_duplicates.labels(self.channel).inc()
            log.info("%s: skipped a repeat of %s", self.channel, ikey)
            self.book.skip(tp, offset)
            return False
        self._order += 1
        job = Job(dict(alert), ikey, alert_id, priority_rank(alert), tp, offset, key,
                  self._order)
        self.book.take(tp, offset)
        self._pending[ikey] = job
        try:
            await self.queue.put(job)
        except asyncio.CancelledError:
            self.book.untake(tp, offset)
            self._pending.pop(ikey, None)
            raise
        self.max_held = max(self.max_held, self.queue.held)
        return True

    def _rebuild_held_back(self, alert: dict[str, Any], ts_ms: int | None) -> None:
        """A record routed before a restart (:meth:`catch_up`): held back then if a shelf
        of its zone held at its Kafka timestamp (and it was not critical nor a resolution),
        so that the end of the shelf sends it as it would have without the restart."""
        if self.shelves is None:
            return
        alert_id = str(alert.get("alert_id"))
        if ts_ms is not None and holdable(alert) and \
                self.shelves.held_at(str(alert.get("zone_id")), ts_ms):
            self._held_back[alert_id] = alert
        else:
            self._held_back.pop(alert_id, None)

    async def release_unshelved(self) -> int:
        """The episodes held back by a shelf that ended: the newest record of each still
        open is queued once, marked ``unshelved``. Returns how many."""
        if self.shelves is None or not self._held_back:
            return 0
        now = self.wall_clock()
        released = 0
        for alert_id, alert in list(self._held_back.items()):
            if suppressed(alert, self.shelves, now) is not None:
                continue
            del self._held_back[alert_id]
            key = idempotency_key(alert)
            if key in self._pending or self.episodes.seen(alert_id, key):
                continue
            self._order += 1
            job = Job(alert | {"unshelved": True}, key, alert_id, priority_rank(alert), None,
                      -1, str(alert.get("zone_id", "")).encode(), self._order)
            self._pending[key] = job
            await self.queue.put(job)
            released += 1
            log.info("%s: zone %s no longer shelved: %s sent", self.channel,
                     alert.get("zone_id"), key)
        return released

    def catch_up(self, tp: TP, until: int) -> None:
        """The partition is read again from before ``until`` (its committed offset) only to
        rebuild which episodes this channel received (:mod:`agents.delivery.routing`): the
        records below ``until`` are routed, not sent, and the offset stays at ``until``."""
        self._catching_up[tp] = until
        self.book.skip(tp, until - 1)

    async def revoke(self, tps: Any) -> None:
        """Partitions ``tps`` went to another worker (or away for a while): their queued
        alerts are dropped and forgotten, so whoever reads those offsets next delivers
        them; a send in flight finishes, but is not retried (an adopted one is)."""
        gone = set(tps)
        for tp in gone:
            self._catching_up.pop(tp, None)
        for job in await self.queue.drop(lambda j: j.tp in gone):
            self._pending.pop(job.key, None)
        for job in self._pending.values():
            if job.tp in gone:
                job.orphan = True
        self.book.drop(gone)

    # -- sending -----------------------------------------------------------------------
    async def send_forever(self) -> None:
        """One sender: take the best ready job, try it once, settle it; repeat."""
        while True:
            job = await self.queue.get()
            if self._stopping:  # handed back: not finished, not committed
                return
            self.in_flight += 1
            self._quiet.clear()
            try:
                await self._attempt(job)
            finally:
                self.in_flight -= 1
                if self.in_flight == 0:
                    self._quiet.set()

    async def _attempt(self, job: Job) -> None:
        delayed = lateness_s(job.alert, self.wall_clock(), self.delayed_after_s)
        try:
            result = await self.notifier.send(job.alert, job.key, delayed_s=delayed)
        except Exception as exc:  # a notifier bug is a failed attempt, never a dead sender
            log.exception("%s: send of %s raised", self.channel, job.key)
            result = Result(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
        job.attempts += 1
        if result.outcome is Outcome.DELIVERED:
            self.metrics.notifier_deliveries.labels(self.channel).inc()
            log.info("%s delivered %s%s", self.channel, job.key,
                     f" ({delayed} s late)" if delayed is not None else "")
            if self._failing:  # the receiver is back: release the waiting retries
                self._failing = False
                await self.queue.wake()
            await self._finish(job)
            return
        if result.outcome is Outcome.REJECTED:
            await self._give_up(job, Result(Outcome.REJECTED, result.reason,
                                            attempts=job.attempts))
            return
        self._failing = True
        self.metrics.notifier_retries.labels(self.channel).inc()
        if job.attempts >= self.policy.max_attempts and not self.episodes.is_open(
                job.alert_id):
            await self._give_up(job, Result(
                Outcome.FAILED, f"gave up after {job.attempts} attempts (episode "
                f"resolved): {result.reason}", attempts=job.attempts))
            return
        if job.attempts == self.policy.max_attempts:
            log.warning("%s: %s not delivered after %d attempts (%s); its episode is "
                        "open, so retries go on", self.channel, job.key, job.attempts,
                        result.reason)
        else:
            self._outage.note("%s: %s not delivered (%s); retrying", self.channel, job.key,
                              result.reason)
        if job.orphan:  # its partition went: the next reader of its offset sends it
            self._pending.pop(job.key, None)
            await self.queue.done(job)
            return
        delay = self.policy.delay(job.attempts - 1, self.rng, result.retry_after_s)
        await self.queue.retry_at(job, self.queue.clock() + delay)

    async def _give_up(self, job: Job, result: Result) -> None:
        self.metrics.notifier_failures.labels(self.channel).inc()
        log.warning("%s dead-lettered %s: %s", self.channel, job.key, result.reason)
        await self._write_dlq(job.kafka_key, orjson.dumps(notify_dlq_record(
            job.alert, self.channel, result)))
        self.dead_lettered += 1
        await self._finish(job)

    async def _finish(self, job: Job) -> None:
        """Delivered or dead-lettered: its key counts as taken from now on."""
        self.episodes.take(job.alert_id, job.key,
                           resolved=job.alert.get("status") == "resolved")
        self._pending.pop(job.key, None)
        if not job.orphan:
            self.book.finish(job.tp, job.offset)
        await self.queue.done(job)

    async def _write_dlq(self, key: bytes | None, value: bytes) -> None:
        """The DLQ write, retried until it is acknowledged (its record stays unfinished,
        and uncommitted, meanwhile)."""
        delay = 0.5
        while True:
            try:
                await self.dead_letter(key, value)
                return
            except Exception as exc:
                self._outage.note("%s: the notify DLQ write failed (%s); retrying",
                                  self.channel, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    # -- the consumer loop -------------------------------------------------------------
    async def serve(self, consumer: Any, stop: asyncio.Event, *, grace_s: float = GRACE_S,
                    commit_every_s: float = 1.0) -> None:
        """Consume (an aiokafka consumer, subscribed) and deliver until ``stop``."""
        senders = [asyncio.create_task(self.send_forever(), name=f"{self.channel}-send-{i}")
                   for i in range(self.senders)]
        committer = asyncio.create_task(self._commit_forever(consumer, commit_every_s))
        try:
            await _until(stop, self._consume(consumer, stop))
        finally:
            self._stopping = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await self._quiet.wait()
            if self.in_flight:
                log.warning("%s: stopping with %d sends in flight after %.3g s: they are "
                            "read again at the next start", self.channel, self.in_flight,
                            grace_s)
            for t in [*senders, committer]:
                t.cancel()
            await asyncio.gather(*senders, committer, return_exceptions=True)
            await self.commit(consumer)
            log.info("%s: stopped; %d alerts held were not finished and are read again at "
                     "the next start", self.channel, self.queue.held)

    async def _consume(self, consumer: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.queue.full():
                consumer.pause(*consumer.assignment())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self.queue.wait_for_room()
                batches = await consumer.getmany(timeout_ms=0)  # stays in the group
            else:
                if consumer.paused():
                    consumer.resume(*consumer.paused())
                batches = await consumer.getmany(timeout_ms=500,
                                                 max_records=max(1, self.queue.free))
            for tp, records in batches.items():
                for r in records:
                    if undecodable_info(r) is not None:  # logged by agents/kafka_safety.py
                        self.book.skip(tp, r.offset)
                        continue
                    await self.accept(tp, r.offset, r.key, r.value, r.timestamp)

    async def commit(self, consumer: Any, tps: Any = None) -> None:
        assigned = consumer.assignment()
        offsets = {tp: off for tp, off in self.book.committable(tps).items()
                   if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:
            self._outage.note("%s: offset commit failed (%s); retrying", self.channel, exc)
            return
        self.book.committed(offsets)

    async def _commit_forever(self, consumer: Any, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.release_unshelved()
            await self.commit(consumer)


async def _until(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` until it returns or ``stop`` is set (then cancel it)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
