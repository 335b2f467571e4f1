"""A channel's Kafka side (:func:`run_notify`, what ``safetour notify`` runs per channel): its
consumer group (``<app id>-notify-<channel>``) on the alerts topic, its DLQ producer, the
shelves follower, and the rebalance listener that commits and forgets a revoked partition and
rebuilds the routed episodes of an assigned one; the channel itself is a
:class:`~agents.delivery.channels.ChannelRunner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..logs import ThrottledLog
from ..shelves import Shelves
from .channels import DELAYED_AFTER_S, GRACE_S, QUEUE_BOUND, SENDERS, ChannelRunner
from .notify import Notifier, RetryPolicy, Route
from .shelving import follow_shelves

if TYPE_CHECKING:
    import aiohttp

    from ..config import Settings

__all__ = ["ROUTE_LOOKBACK_S", "run_notify"]

log = logging.getLogger(__name__)

ROUTE_LOOKBACK_S = 24 * 3600.0  # how far back a restart rebuilds the routed episodes


class _Rebalance:
    """Before partitions go: commit what finished on them and forget them. When they come:
    read them again from ``lookback_s`` before now up to the committed offset, to rebuild
    which episodes the channel received (:meth:`ChannelRunner.catch_up`)."""

    def __init__(self, runner: ChannelRunner, consumer: Any,
                 lookback_s: float = ROUTE_LOOKBACK_S) -> None:
        self.runner, self.consumer, self.lookback_s = runner, consumer, lookback_s

    async def _catch_up(self, assigned: Any) -> None:
        since_ms = int((self.runner.wall_clock() - self.lookback_s) * 1000)
        for tp in sorted(assigned):
            committed = await self.consumer.committed(tp)
            if committed is None or committed <= 0:
                continue  # read from the start anyway
            found = (await self.consumer.offsets_for_times({tp: since_ms})).get(tp)
            if found is None or found.offset >= committed:
                continue
            self.consumer.seek(tp, found.offset)
            self.runner.catch_up(tp, committed)
            log.info("%s: %s/%d: rebuilding the routed episodes from offset %d to %d",
                     self.runner.channel, tp.topic, tp.partition, found.offset, committed)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.runner.commit(self.consumer, set(revoked))
        await self.runner.revoke(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        try:
            await self._catch_up(assigned)
        except Exception as exc:  # without it the level rule alone routes resolutions
            log.warning("%s: could not rebuild the routed episodes (%s): resolutions of "
                        "episodes that stepped down before the restart may be missed",
                        self.runner.channel, exc)
        log.info("%s: consuming %s", self.runner.channel,
                 ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(assigned)))


async def run_notify(
    settings: Settings,
    notifier_factory: Callable[[aiohttp.ClientSession], Notifier],
    channel: str,
    route: Route,
    policy: RetryPolicy,
    stop: asyncio.Event,
    *,
    queue_bound: int = QUEUE_BOUND,
    senders: int = SENDERS,
    grace_s: float = GRACE_S,
    delayed_after_s: float = DELAYED_AFTER_S,
    on_runner: Callable[[ChannelRunner], None] | None = None,
    route_lookback_s: float = ROUTE_LOOKBACK_S,
) -> None:
    """Deliver the alerts topic to one channel (group ``<app_id>-notify-<channel>``) until
    ``stop``. Several calls in one event loop are independent channels."""
    import aiohttp  # noqa: PLC0415
    from aiokafka import ConsumerRebalanceListener  # noqa: PLC0415

    from ..kafka import KafkaUnreachable  # noqa: PLC0415
    from ..metrics import Metrics  # noqa: PLC0415
    from ..rejects import InternalRejects  # noqa: PLC0415

    cfg = settings.kafka
    group = f"{settings.app_id}-notify-{channel}"
    session_ms = round(settings.session_timeout_s * 1000)
    outage = ThrottledLog(log)

    async def started(make: Callable[[], Any]) -> Any:
        """A started client, retried (a new one each time) until Kafka answers or stop."""
        while not stop.is_set():
            client = make()
            try:
                await cfg.start(client)
                return client
            except KafkaUnreachable as exc:
                outage.note("notify %s: %s; retrying", channel, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await stop.wait()
        return None

    consumer = await started(lambda: cfg.consumer(
        group_id=group, auto_offset_reset="earliest", session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(100, session_ms // 3)))
    producer = await started(cfg.producer) if consumer is not None else None
    metrics = Metrics()
    try:
        if consumer is None or producer is None:
            return

        async def dead_letter(key: bytes | None, value: bytes) -> None:
            await producer.send_and_wait(settings.topics.notify_dlq, key=key, value=value)

        async with aiohttp.ClientSession() as session:
            runner = ChannelRunner(notifier_factory(session), route, policy, dead_letter,
                                   metrics, InternalRejects.of(f"notify-{channel}", metrics,
                                                               log),
                                   queue_bound=queue_bound, senders=senders,
                                   delayed_after_s=delayed_after_s, shelves=Shelves())
            assert runner.shelves is not None
            shelf_stop, shelves_read = asyncio.Event(), asyncio.Event()
            follower = asyncio.create_task(follow_shelves(
                cfg, settings.topics.shelves, runner.shelves, shelf_stop, shelves_read,
                rejects=runner.rejects))
            with contextlib.suppress(TimeoutError):  # a slow topic holds back no alert long
                async with asyncio.timeout(10.0):
                    await shelves_read.wait()
            if on_runner is not None:
                on_runner(runner)

            class Listener(_Rebalance, ConsumerRebalanceListener):  # type: ignore[misc]
                pass

            consumer.subscribe([settings.topics.alerts], listener=Listener(runner, consumer,
                                                                      route_lookback_s))
            log.info("notify %s: reading %s as group %s", channel, settings.topics.alerts,
                     group)
            try:
                await runner.serve(consumer, stop, grace_s=grace_s)
            finally:
                shelf_stop.set()
                with contextlib.suppress(Exception):
                    await follower
    finally:
        for client in (consumer, producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
