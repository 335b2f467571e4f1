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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import orjson
from aiokafka import TopicPartition

from schemas import Ack, Reason, Rejection, decode_ack, decode_alert, format_ts
from streams.escalation import EscalationTracker, escalation_alert

from .config import Settings
from .metrics import Metrics
from .notify import (
    Notifier,
    Outcome,
    Result,
    RetryPolicy,
    Route,
    deliver,
    notify_dlq_record,
)
from .rejects import InternalRejects, malformed_dlq_record
from .topics import partitions_of, seek_since

log = logging.getLogger(__name__)


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
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, records in batches.items():
                    for r in records:
                        bad = _apply(tracker, route, tp.topic, topics.alerts, topics.acks,
                                     r.key, r.value, r.timestamp)
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
                for p in tracker.due(now):
                    alert = escalation_alert(p, now)
                    got = await _unless_stopped(deliver(notifier, alert, policy), stop,
                                                grace_s)
                    if got is None:
                        log.warning("escalation of %s cut off by the stop: the next start "
                                    "sends it", alert["alert_id"])
                        break
                    result = got
                    alert_id = str(alert["alert_id"])
                    tracker.on_escalated(alert_id, now)
                    await producer.send_and_wait(topics.escalations, key=alert_id.encode(),
                                                 value=orjson.dumps({
                                                     "alert_id": alert_id, "channel": channel,
                                                     "ts": format_ts(now),
                                                     "outcome": result.outcome.value}))
                    if result.outcome is Outcome.DELIVERED:
                        m.notifier_deliveries.labels(channel).inc()
                        log.warning("escalated %s to %s: not acknowledged for %ds", alert_id,
                                    channel, alert["escalation"]["unacknowledged_s"])
                    else:
                        m.notifier_failures.labels(channel).inc()
                        await producer.send_and_wait(
                            topics.notify_dlq, key=alert_id.encode(),
                            value=orjson.dumps(notify_dlq_record(alert, channel, result)))
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
           key: bytes | None, value: bytes | None, ts_ms: int) -> Rejection | None:
    """Feed one record to the tracker; a record it cannot use is returned, not applied."""
    if topic == alerts:
        alert = decode_alert(value)
        if isinstance(alert, Rejection):
            return alert
        if route.zones is None or alert["zone_id"] in route.zones:
            tracker.on_alert(alert, ts_ms)
    elif topic == acks:
        ack = decode_ack(value)
        if not isinstance(ack, Ack):
            return ack
        tracker.on_ack(ack.alert_id, ts_ms)
    else:  # escalations log: keyed by alert_id
        if not key:
            return Rejection(Reason.SCHEMA, "escalation record without a key (alert_id)")
        tracker.on_escalated(key.decode(errors="replace"), ts_ms)
    return None
