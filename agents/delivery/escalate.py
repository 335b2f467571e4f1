"""``safetour notify --channel C --escalate-after S``: the escalation notifier.

A critical alert that no operator acknowledged within S seconds goes to channel C (a second
channel: the duty manager's LINE, say). It reads three topics without a consumer group, each
from ``lookback`` ago:

    safetour.alerts.v1       episodes that reached critical (and their resolutions)
    safetour.acks.v1         acknowledgements from the dashboard
    safetour.escalations.v1  escalations already sent (its own log)

and sends nothing until it has caught up with all three, so a restart neither repeats an
escalation nor misses one that fell due while it was down. The state machine is
:class:`streams.escalation.EscalationTracker`; times are the Kafka record timestamps and the
wall clock (processing time: how long the alert has stood unacknowledged).

It does not give up on an open episode (:class:`Escalations`): an escalation the channel
does not take is retried at the policy's capped backoff, past ``max_attempts``, while the
loop goes on reading (so other escalations, acks and resolutions are not held back). Once
the episode is acknowledged or resolved, an escalation still undelivered is dead-lettered
(outcome ``failed``); one the receiver rejects is dead-lettered at once.

An episode whose escalation was delivered and which is then resolved or acknowledged gets
one stand-down on the same channel (:class:`streams.escalation.StandDowns`; key
``alert_id:stand-down``; a drill's is marked as one). It is retried like an escalation up
to ``max_attempts`` (its episode is closed already), then dead-lettered (``failed``), and
logged on the escalations topic with ``"stand_down": true`` once settled, so a restart
repeats none and sends one that fell due while it was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiokafka import TopicPartition

from schemas import Ack, Reason, Rejection, decode_ack, decode_alert, format_ts
from streams.escalation import (
    EscalationTracker,
    Pending,
    StandDown,
    StandDowns,
    escalation_alert,
    stand_down_alert,
)

from ..config import Settings
from ..metrics import Metrics
from ..rejects import InternalRejects, malformed_dlq_record
from ..topics import partitions_of, seek_since
from .notify import (
    Notifier,
    Outcome,
    Result,
    RetryPolicy,
    Route,
    idempotency_key,
    notify_dlq_record,
)

log = logging.getLogger(__name__)

Record = Callable[[dict[str, Any], Result], Awaitable[None]]


@dataclass
class _Try:
    pending: Pending
    attempts: int = 0
    next_at: float = 0.0
    closed: bool = False


@dataclass
class _StandTry:
    alert: dict[str, Any]
    attempts: int = 0
    next_at: float = 0.0


@dataclass
class Escalations:
    """The escalations that fell due and are not yet settled. ``record(alert, result)``
    writes the outcome (the escalations log, the DLQ when not delivered)."""

    notifier: Notifier
    policy: RetryPolicy
    record: Record
    metrics: Metrics
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    trying: dict[str, _Try] = field(default_factory=dict)
    standing_down: dict[str, _StandTry] = field(default_factory=dict)

    @property
    def channel(self) -> str:
        return self.notifier.channel

    def due(self, pending: list[Pending]) -> None:
        for p in pending:
            self.trying.setdefault(str(p.alert["alert_id"]), _Try(p))

    def stand_down(self, due: list[StandDown]) -> None:
        for s in due:
            self.standing_down.setdefault(str(s.alert["alert_id"]),
                                          _StandTry(stand_down_alert(s)))

    def closed(self, alert_id: str) -> None:
        """Acknowledged or resolved: an escalation not delivered yet is given up."""
        t = self.trying.get(alert_id)
        if t is not None:
            t.closed = True

    async def run(self, now_ms: int, stop: asyncio.Event, grace_s: float) -> None:
        """One try of each escalation whose retry time has come (oldest first); an
        escalation whose episode closed is dead-lettered. A try cut off by ``stop`` is
        not recorded: the next start sends it."""
        for alert_id, t in sorted(self.trying.items(), key=lambda i: i[1].pending.due_ms):
            alert = escalation_alert(t.pending, now_ms)
            if t.closed:
                await self._settle(alert_id, alert, Result(
                    Outcome.FAILED, f"not delivered after {t.attempts} attempts, and the "
                    "episode was acknowledged or resolved", attempts=t.attempts))
                continue
            if t.next_at > self.clock():
                continue
            if stop.is_set():
                return
            got = await _unless_stopped(self._send(alert), stop, grace_s)
            if got is None:
                log.warning("escalation of %s cut off by the stop: the next start sends it",
                            alert_id)
                return
            t.attempts += 1
            if got.outcome in (Outcome.DELIVERED, Outcome.REJECTED):
                await self._settle(alert_id, alert, Result(got.outcome, got.reason,
                                                           attempts=t.attempts))
                continue
            self.metrics.notifier_retries.labels(self.channel).inc()
            if t.attempts == self.policy.max_attempts:
                log.warning("escalation of %s not delivered after %d attempts (%s); its "
                            "episode is open, so retries go on", alert_id, t.attempts,
                            got.reason)
            t.next_at = self.clock() + self.policy.delay(t.attempts - 1, self.rng,
                                                         got.retry_after_s)
        await self._stand_downs(stop, grace_s)

    async def _stand_downs(self, stop: asyncio.Event, grace_s: float) -> None:
        """One try of each stand-down whose retry time has come; its episode is closed, so
        after ``max_attempts`` it is dead-lettered."""
        for alert_id, t in list(self.standing_down.items()):
            if t.next_at > self.clock():
                continue
            if stop.is_set():
                return
            got = await _unless_stopped(self._send(t.alert), stop, grace_s)
            if got is None:
                log.warning("stand-down of %s cut off by the stop: the next start sends it",
                            alert_id)
                return
            t.attempts += 1
            if got.outcome is Outcome.RETRY and t.attempts < self.policy.max_attempts:
                self.metrics.notifier_retries.labels(self.channel).inc()
                t.next_at = self.clock() + self.policy.delay(t.attempts - 1, self.rng,
                                                             got.retry_after_s)
                continue
            result = Result(got.outcome, got.reason, attempts=t.attempts)
            if got.outcome is Outcome.RETRY:
                result = Result(Outcome.FAILED, f"gave up after {t.attempts} attempts: "
                                f"{got.reason}", attempts=t.attempts)
            await self.record(t.alert, result)
            del self.standing_down[alert_id]
            if result.outcome is Outcome.DELIVERED:
                self.metrics.notifier_deliveries.labels(self.channel).inc()
                log.warning("stood down %s on %s: %s", alert_id, self.channel,
                            t.alert["stand_down"]["reason"])
            else:
                self.metrics.notifier_failures.labels(self.channel).inc()
                log.warning("stand-down of %s dead-lettered: %s", alert_id, result.reason)

    async def _send(self, alert: dict[str, Any]) -> Result:
        try:
            return await self.notifier.send(alert, idempotency_key(alert))
        except Exception as exc:  # a notifier bug is a failed attempt
            log.exception("escalation send of %s raised", alert["alert_id"])
            return Result(Outcome.RETRY, f"{type(exc).__name__}: {exc}")

    async def _settle(self, alert_id: str, alert: dict[str, Any], result: Result) -> None:
        await self.record(alert, result)
        del self.trying[alert_id]
        if result.outcome is Outcome.DELIVERED:
            self.metrics.notifier_deliveries.labels(self.channel).inc()
            log.warning("escalated %s to %s: not acknowledged for %ds", alert_id,
                        self.channel, alert["escalation"]["unacknowledged_s"])
        else:
            self.metrics.notifier_failures.labels(self.channel).inc()
            log.warning("escalation of %s dead-lettered: %s", alert_id, result.reason)


async def run_escalator(
    settings: Settings,
    notifier_factory: Callable[[aiohttp.ClientSession], Notifier],
    channel: str,
    after_s: float,
    policy: RetryPolicy,
    *,
    route: Route | None = None,
    lookback_s: float = 24 * 3600,
    stop: asyncio.Event | None = None,
    metrics: Metrics | None = None,
    grace_s: float = 5.0,
) -> None:
    """Escalate until ``stop``. On stop, a delivery under way gets ``grace_s`` to finish;
    one cut off is not recorded in the escalations log, so the next start sends it."""
    topics = settings.topics
    cfg = settings.kafka
    route = route or Route("critical")
    m = metrics or Metrics()
    stop = stop or asyncio.Event()
    tps = [TopicPartition(t, p) for t in (topics.alerts, topics.acks, topics.escalations)
           for p in await partitions_of(cfg, t)]
    consumer = cfg.consumer()
    producer = cfg.producer()
    tracker = EscalationTracker(round(after_s * 1000))
    stand_downs = StandDowns()
    rejects = InternalRejects.of(f"escalate-{channel}", m, log)
    await cfg.start(consumer)
    try:
        await cfg.start(producer)
    except BaseException:
        await consumer.stop()
        raise
    try:
        consumer.assign(tps)
        await seek_since(consumer, tps, int((time.time() - lookback_s) * 1000))
        ends = await consumer.end_offsets(tps)
        caught_up = False
        async with aiohttp.ClientSession() as session:
            notifier = notifier_factory(session)

            async def record(alert: dict[str, Any], result: Result) -> None:
                alert_id = str(alert["alert_id"])
                now_ms = int(time.time() * 1000)
                logged: dict[str, Any] = {"alert_id": alert_id, "channel": channel,
                                          "ts": format_ts(now_ms),
                                          "outcome": result.outcome.value}
                if alert.get("stand_down"):
                    logged["stand_down"] = True
                    stand_downs.on_stood_down(alert_id, now_ms)
                else:
                    tracker.on_escalated(alert_id, now_ms)
                    if result.outcome is Outcome.DELIVERED:
                        stand_downs.on_escalated(alert_id)
                await producer.send_and_wait(topics.escalations, key=alert_id.encode(),
                                             value=orjson.dumps(logged))
                if result.outcome is not Outcome.DELIVERED:
                    await producer.send_and_wait(
                        topics.notify_dlq, key=alert_id.encode(),
                        value=orjson.dumps(notify_dlq_record(alert, channel, result)))

            escalations = Escalations(notifier, policy, record, m)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, records in batches.items():
                    for r in records:
                        closed: set[str] = set()
                        bad = _apply(tracker, route, tp.topic, topics.alerts, topics.acks,
                                     r.key, r.value, r.timestamp, closed=closed,
                                     stand_downs=stand_downs, channel=channel)
                        for alert_id in closed:
                            escalations.closed(alert_id)
                        if tp.topic == topics.escalations and r.key:  # sent by another
                            escalations.trying.pop(r.key.decode(errors="replace"), None)
                        if bad is not None:  # counted, logged, dead-lettered; go on
                            rejects.count(tp.topic, bad, f"{tp.partition}/{r.offset}")
                            await producer.send_and_wait(
                                topics.notify_dlq, key=r.key, value=orjson.dumps(
                                    malformed_dlq_record(
                                        bad, channel, value=r.value, topic=tp.topic,
                                        partition=tp.partition, offset=r.offset, key=r.key)))
                if not caught_up:
                    positions = {tp: await consumer.position(tp) for tp in tps}
                    caught_up = all(positions[tp] >= ends[tp] for tp in tps)
                    if not caught_up:
                        continue
                    log.info("escalation (%s, after %ss): caught up; pending %s", channel,
                             after_s, tracker.pending_ids())
                now = int(time.time() * 1000)
                escalations.due(tracker.due(now))
                escalations.stand_down(stand_downs.due(now))
                await escalations.run(now, stop, grace_s)
    finally:
        await consumer.stop()
        await producer.stop()


async def _unless_stopped(work: Coroutine[Any, Any, Result], stop: asyncio.Event,
                          grace_s: float) -> Result | None:
    """``work``'s result; once ``stop`` is set it gets ``grace_s`` more, then None."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=grace_s)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def _apply(tracker: EscalationTracker, route: Route, topic: str, alerts: str, acks: str,
           key: bytes | None, value: bytes | None, ts_ms: int, *,
           closed: set[str] | None = None, stand_downs: StandDowns | None = None,
           channel: str = "") -> Rejection | None:
    """Feed one record to the tracker (and ``stand_downs``: what ``channel`` heard); a
    record it cannot use is returned, not applied. The episodes it closes (an ack, a
    resolution) go to ``closed``."""
    shut = closed if closed is not None else set()
    if topic == alerts:
        alert = decode_alert(value)
        if isinstance(alert, Rejection):
            return alert
        if route.zones is None or alert["zone_id"] in route.zones:
            tracker.on_alert(alert, ts_ms)
            if stand_downs is not None:
                stand_downs.on_alert(alert, ts_ms)
            if alert.get("status") == "resolved":
                shut.add(str(alert["alert_id"]))
    elif topic == acks:
        ack = decode_ack(value)
        if not isinstance(ack, Ack):
            return ack
        tracker.on_ack(ack.alert_id, ts_ms)
        if stand_downs is not None:
            stand_downs.on_ack(ack.alert_id, ack.operator, ts_ms)
        shut.add(ack.alert_id)
    else:  # escalations log: keyed by alert_id
        if not key:
            return Rejection(Reason.SCHEMA, "escalation record without a key (alert_id)")
        alert_id = key.decode(errors="replace")
        tracker.on_escalated(alert_id, ts_ms)
        if stand_downs is not None:
            _logged(stand_downs, alert_id, value, ts_ms, channel)
    return None


def _logged(stand_downs: StandDowns, alert_id: str, value: bytes | None, ts_ms: int,
            channel: str) -> None:
    """An escalations log record of ``channel``: a delivered escalation, or a settled
    stand-down (another channel's, or one unreadable, changes nothing here)."""
    try:
        rec = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return
    if not isinstance(rec, dict) or rec.get("channel") != channel:
        return
    if rec.get("stand_down") is True:
        stand_downs.on_stood_down(alert_id, ts_ms)
    elif rec.get("outcome") == "delivered":
        stand_downs.on_escalated(alert_id)
