"""Notifiers against a real local HTTP server (loopback), with the backoff's sleeps recorded
instead of slept."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from agents.delivery.notify import (
    MemoryNotifier,
    Outcome,
    RateLimited,
    Result,
    RetryPolicy,
    Route,
    TokenBucket,
    WebhookNotifier,
    deliver,
    idempotency_key,
    notify_dlq_record,
    verify,
)

from .httpfakes import Sleeps, serve

SECRET = b"test-secret-not-for-production"
ALERT = {"alert_id": "naresuan-bridge:1771247185000:ab", "zone_id": "naresuan-bridge",
         "level": "critical", "previous_level": "high", "status": "escalated",
         "ts": "2026-02-16T13:06:25.000Z", "message": {"th": "วิกฤต", "en": "critical"}}


@dataclass
class Receiver:
    """A webhook receiver that fails its first ``fail`` calls, then records deliveries by
    idempotency key after checking the signature."""

    fail: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    calls: int = 0
    deliveries: dict[str, Any] = field(default_factory=dict)
    bad_signatures: int = 0
    delayed: list[str | None] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.delayed.append(request.headers.get("X-Safetour-Delayed"))
        body = await request.read()
        if not verify(SECRET, request.headers["X-Safetour-Timestamp"], body,
                      request.headers["X-Safetour-Signature"]):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.calls <= self.fail:
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.Response(status=self.fail_status, headers=headers)
        self.deliveries.setdefault(request.headers["Idempotency-Key"], orjson.loads(body))
        return web.Response(status=204)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    async with serve("/hook", receiver.handle) as base:
        yield receiver, f"{base}/hook"


@pytest.mark.asyncio
async def test_retries_until_the_receiver_recovers_and_delivers_once(
    server: tuple[Receiver, str],
) -> None:
    receiver, url = server
    receiver.fail = 3
    sleeps = Sleeps()
    async with aiohttp.ClientSession() as session:
        hook = WebhookNotifier(url, SECRET, session)
        result = await deliver(hook, ALERT, RetryPolicy(max_attempts=6), sleep=sleeps,
                               rng=random.Random(1))
        # A replay publishes the same alert again: same key, still one delivery.
        again = await deliver(hook, ALERT, RetryPolicy(), sleep=sleeps)
    assert (result.outcome, result.attempts) == (Outcome.DELIVERED, 4)
    assert again.outcome is Outcome.DELIVERED
    assert list(receiver.deliveries) == [idempotency_key(ALERT)]
    assert receiver.deliveries[idempotency_key(ALERT)] == ALERT
    assert receiver.bad_signatures == 0
    assert len(sleeps) == 3
    assert all(0 <= s <= 0.5 * 2 ** i for i, s in enumerate(sleeps))  # full jitter


@pytest.mark.asyncio
async def test_receiver_down_for_good_is_dead_lettered_after_the_retries() -> None:
    sleeps = Sleeps()
    async with aiohttp.ClientSession() as session:
        hook = WebhookNotifier("http://127.0.0.1:9/hook", SECRET, session, timeout_s=1)
        result = await deliver(hook, ALERT, RetryPolicy(max_attempts=4), sleep=sleeps)
    assert (result.outcome, result.attempts) == (Outcome.FAILED, 4)
    assert len(sleeps) == 3
    record = notify_dlq_record(ALERT, "webhook", result)
    assert record["reason"].startswith("gave up after 4 attempts")
    assert record["idempotency_key"] == idempotency_key(ALERT)


@pytest.mark.asyncio
async def test_client_errors_are_not_retried_and_429_waits_retry_after(
    server: tuple[Receiver, str],
) -> None:
    receiver, url = server
    receiver.fail, receiver.fail_status = 1, 400
    sleeps = Sleeps()
    async with aiohttp.ClientSession() as session:
        hook = WebhookNotifier(url, SECRET, session)
        rejected = await deliver(hook, ALERT, RetryPolicy(), sleep=sleeps)
        assert (rejected.outcome, rejected.attempts, sleeps) == (Outcome.REJECTED, 1, [])
        receiver.calls, receiver.fail, receiver.fail_status = 0, 1, 429
        receiver.retry_after = "7"
        ok = await deliver(hook, ALERT, RetryPolicy(), sleep=sleeps)
    assert ok.outcome is Outcome.DELIVERED
    assert sleeps == [7.0]


def test_signatures_reject_forgery_and_replay() -> None:
    from agents.delivery.notify import sign  # noqa: PLC0415

    body = orjson.dumps(ALERT)
    sig = sign(SECRET, "1771247185", body)
    assert verify(SECRET, "1771247185", body, sig, now=1771247185)
    assert not verify(SECRET, "1771247185", body + b" ", sig, now=1771247185)
    assert not verify(b"other", "1771247185", body, sig, now=1771247185)
    assert not verify(SECRET, "1771247185", body, sig, now=1771247185 + 301)


def test_routes_by_level_and_zone_and_always_send_resolutions() -> None:
    route = Route(min_level="high", zones=frozenset({"naresuan-bridge"}))
    assert route.wants(ALERT)
    assert not route.wants(ALERT | {"level": "elevated"})
    assert not route.wants(ALERT | {"zone_id": "night-bazaar"})
    assert route.wants(ALERT | {"status": "resolved", "level": "normal",
                                "previous_level": "critical"})


@pytest.mark.asyncio
async def test_memory_twin_follows_the_same_contract() -> None:
    twin = MemoryNotifier(script=[Result(Outcome.RETRY, "busy")] * 2)
    sleeps = Sleeps()
    result = await deliver(twin, ALERT, RetryPolicy(), sleep=sleeps)
    assert (result.outcome, result.attempts, twin.calls) == (Outcome.DELIVERED, 3, 3)
    assert list(twin.delivered) == [idempotency_key(ALERT)]


def test_an_escalation_has_a_key_of_its_own() -> None:
    # Else a channel that had the alert itself would take the escalation as a repeat
    # (LINE answers 409 to a reused retry key) and never show it.
    escalated = ALERT | {"escalation": {"unacknowledged_s": 300}}
    assert idempotency_key(escalated) == idempotency_key(ALERT) + ":escalation"


@dataclass
class FakeClock:
    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


@pytest.mark.asyncio
async def test_rate_limit_allows_the_burst_then_spaces_sends() -> None:
    clock = FakeClock()
    inner = MemoryNotifier()
    limited = RateLimited(inner, TokenBucket(rate=2, burst=3, clock=clock, sleep=clock.sleep))
    sent_at = []
    for i in range(7):
        result = await limited.send(ALERT | {"ts": str(i)}, f"k{i}")
        assert result.outcome is Outcome.DELIVERED
        sent_at.append(clock.now)
    assert sent_at == [0, 0, 0, 0.5, 1.0, 1.5, 2.0]  # burst of 3, then 2 a second
    assert len(inner.delivered) == 7
    clock.now += 10  # idle: the bucket refills to the burst, not beyond
    for _ in range(4):
        await limited.send(ALERT, "again")
    assert clock.now == 12.5
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0)


@pytest.mark.asyncio
async def test_a_malformed_record_is_dead_lettered_and_the_next_alert_delivered() -> None:
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from agents.delivery.channels import ChannelRunner  # noqa: PLC0415
    from agents.metrics import Metrics  # noqa: PLC0415
    from agents.rejects import InternalRejects  # noqa: PLC0415

    metrics = Metrics()
    twin = MemoryNotifier()
    dlq: list[tuple[bytes | None, bytes]] = []

    async def dead_letter(key: bytes | None, value: bytes) -> None:
        dlq.append((key, value))

    runner = ChannelRunner(twin, Route("elevated"), RetryPolicy(), dead_letter, metrics,
                           InternalRejects.of("notify-memory", metrics,
                                              logging.getLogger("test")), senders=1)
    second = ALERT | {"alert_id": "naresuan-bridge:2:cd"}
    records = [orjson.dumps(ALERT), b"\x00 not json", orjson.dumps([ALERT]),
               orjson.dumps(ALERT | {"level": 3}), orjson.dumps(second)]
    queued = [await runner.accept("t.alerts", offset, b"naresuan-bridge", value)
              for offset, value in enumerate(records)]
    sender = asyncio.create_task(runner.send_forever())
    try:
        for _ in range(500):
            if not runner.queue.held:
                break
            await asyncio.sleep(0.01)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert queued == [True, False, False, False, True]
    assert list(twin.delivered) == [idempotency_key(ALERT), idempotency_key(second)]
    dead = [orjson.loads(v) for _, v in dlq]
    assert [(d["outcome"], d["reason"], d["source"]["offset"]) for d in dead] == [
        ("malformed", "not_json", 1), ("malformed", "schema", 2), ("malformed", "schema", 3)]
    assert "level" in dead[2]["detail"]
    assert metrics.internal_rejects.labels("t.alerts", "notify-memory")._value.get() == 3
    assert runner.book.committable() == {"t.alerts": 5}


@pytest.mark.asyncio
async def test_retry_after_is_capped(server: tuple[Receiver, str]) -> None:
    """Failed before: a receiver answering ``Retry-After: 86400`` stalled the channel a day."""
    receiver, url = server
    receiver.fail, receiver.fail_status, receiver.retry_after = 1, 503, "86400"
    sleeps = Sleeps()
    async with aiohttp.ClientSession() as session:
        ok = await deliver(WebhookNotifier(url, SECRET, session), ALERT, RetryPolicy(),
                           sleep=sleeps)
    assert ok.outcome is Outcome.DELIVERED
    assert sleeps == [300.0]
    assert RetryPolicy(retry_after_cap_s=20).delay(0, random.Random(1), 86400) == 20


@pytest.mark.asyncio
async def test_a_late_alert_carries_the_delayed_header(server: tuple[Receiver, str]) -> None:
    receiver, url = server
    async with aiohttp.ClientSession() as session:
        hook = WebhookNotifier(url, SECRET, session)
        late = await hook.send(ALERT, "k1", delayed_s=95)
        on_time = await hook.send(ALERT, "k2")
    assert late.outcome is on_time.outcome is Outcome.DELIVERED
    assert receiver.delayed == ["95", None]


def test_the_text_channels_mark_a_late_alert() -> None:
    from agents.delivery.notify import delayed_marker, lateness_s, line_text  # noqa: PLC0415

    assert line_text(ALERT, 95).startswith("[ล่าช้า 1 min / DELAYED 1 min]\n")
    assert line_text(ALERT) == "วิกฤต\n\ncritical"
    assert delayed_marker(42) == "[ล่าช้า 42 s / DELAYED 42 s]"
    at = 1771247185.0  # ALERT's ts
    assert lateness_s(ALERT, at + 31, 30) == 31
    assert lateness_s(ALERT, at + 29, 30) is None
    assert lateness_s(ALERT | {"ts": "garbage"}, at, 30) is None


@pytest.mark.asyncio
async def test_the_escalator_gives_a_delivery_under_way_a_grace_then_hands_it_back() -> None:
    import asyncio  # noqa: PLC0415

    from agents.delivery.escalate import _unless_stopped  # noqa: PLC0415

    stop = asyncio.Event()
    never = asyncio.Event()

    async def hanging() -> Result:
        await never.wait()
        return Result(Outcome.DELIVERED)

    async def quick() -> Result:
        await asyncio.sleep(0.05)
        return Result(Outcome.DELIVERED)

    stop.set()
    t0 = asyncio.get_running_loop().time()
    assert await _unless_stopped(hanging(), stop, 0.2) is None  # cut off: not recorded
    assert 0.15 < asyncio.get_running_loop().time() - t0 < 2
    finished = await _unless_stopped(quick(), stop, 1.0)  # finishes within the grace
    assert finished is not None
    assert finished.outcome is Outcome.DELIVERED
