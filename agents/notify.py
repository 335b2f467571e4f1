"""Notifiers: one small interface per channel, retries with backoff, a dead letter at the end.

    Notifier.send(alert, key) -> Result(outcome, reason, retry_after_s)
        DELIVERED   the channel has it (2xx; for LINE also 409 "already sent")
        RETRY       worth another try (timeout, connection refused, 429, 5xx)
        REJECTED    will never work as it is (4xx but 429): dead-letter at once

``deliver`` retries RETRY outcomes with exponential backoff and full jitter (honouring a
``Retry-After``) up to ``RetryPolicy.max_attempts``, then gives up with a FAILED result that the
caller dead-letters to ``safetour.notify-dlq.v1``. Every attempt of one alert message carries
the same idempotency key (``alert_id:status:ts``), so a receiver can drop repeats, including
the identical alert a replay may publish again.

``MemoryNotifier`` is the in-memory twin for tests; ``WebhookNotifier`` posts the alert JSON,
signed: ``X-Safetour-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` with
``X-Safetour-Timestamp`` (epoch seconds), as Slack and LINE sign theirs, so a receiver can
reject forgeries and replays (check the timestamp is within 5 minutes).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson

from schemas import Rejection, decode_alert
from streams import level_rank

from .kafka_safety import undecodable_info

if TYPE_CHECKING:
    from .metrics import Metrics
    from .rejects import InternalRejects

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"
    FAILED = "failed"  # retries exhausted


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    reason: str = ""
    retry_after_s: float | None = None
    attempts: int = 1


class Notifier(Protocol):
    channel: str

    async def send(self, alert: Mapping[str, Any], key: str) -> Result: ...


def idempotency_key(alert: Mapping[str, Any]) -> str:
    """``alert_id:status:ts``; an escalation of the alert (``streams.escalation``) is a
    message of its own, so it gets a key of its own."""
    key = f"{alert['alert_id']}:{alert['status']}:{alert['ts']}"
    return f"{key}:escalation" if alert.get("escalation") else key


@dataclass(frozen=True, slots=True)
class Route:
    """Which alerts go to a channel: a minimum level, and optionally only some zones.
    Resolutions of routed episodes are always sent, whatever their level ('normal')."""

    min_level: str = "elevated"
    zones: frozenset[str] | None = None

    def wants(self, alert: Mapping[str, Any]) -> bool:
        if self.zones is not None and alert.get("zone_id") not in self.zones:
            return False
        if alert.get("status") == "resolved":
            return level_rank(str(alert.get("previous_level"))) >= level_rank(self.min_level)
        return level_rank(str(alert.get("level"))) >= level_rank(self.min_level)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    base_s: float = 0.5
    cap_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random, retry_after_s: float | None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)], at least Retry-After."""
        backoff = rng.uniform(0, min(self.cap_s, self.base_s * 2 ** attempt))
        return max(backoff, retry_after_s or 0.0)


@dataclass
class TokenBucket:
    """At most ``rate`` sends a second on average, bursts of up to ``burst``; ``acquire``
    waits for a token. Clock and sleep are injectable for tests."""

    rate: float
    burst: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _tokens: float = field(default=-1.0, init=False)
    _at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")

    async def acquire(self) -> float:
        """Take one token; returns the seconds waited."""
        now = self.clock()
        if self._tokens < 0:
            self._tokens, self._at = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        waited = 0.0
        if self._tokens < 1:
            waited = (1 - self._tokens) / self.rate
            await self.sleep(waited)
            self._tokens, self._at = 1.0, now + waited
        self._tokens -= 1
        return waited


@dataclass
class RateLimited:
    """A notifier behind a token bucket: every attempt, retries included, takes a token, so
    a burst of alerts (a festival night) never trips the channel's own limit (LINE: 429)."""

    inner: Notifier
    bucket: TokenBucket

    @property
    def channel(self) -> str:
        return self.inner.channel

    async def send(self, alert: Mapping[str, Any], key: str) -> Result:
        await self.bucket.acquire()
        return await self.inner.send(alert, key)


async def deliver(
    notifier: Notifier,
    alert: Mapping[str, Any],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[Result], None] | None = None,
) -> Result:
    """Send until delivered, rejected, or out of attempts."""
    r = rng or random.Random()
    key = idempotency_key(alert)
    result = Result(Outcome.FAILED, "no attempt")
    for attempt in range(policy.max_attempts):
        result = await notifier.send(alert, key)
        if result.outcome in (Outcome.DELIVERED, Outcome.REJECTED):
            return Result(result.outcome, result.reason, attempts=attempt + 1)
        if attempt + 1 < policy.max_attempts:
            if on_retry is not None:
                on_retry(result)
            await sleep(policy.delay(attempt, r, result.retry_after_s))
    return Result(Outcome.FAILED, f"gave up after {policy.max_attempts} attempts: "
                  f"{result.reason}", attempts=policy.max_attempts)


def notify_dlq_record(alert: Mapping[str, Any], channel: str, result: Result) -> dict[str, Any]:
    """A value for safetour.notify-dlq.v1: the alert, the channel, why, and how many tries."""
    return {
        "channel": channel,
        "outcome": result.outcome.value,
        "reason": result.reason,
        "attempts": result.attempts,
        "idempotency_key": idempotency_key(alert),
        "alert": dict(alert),
        "dead_lettered_at": datetime.now(UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    }


@dataclass
class MemoryNotifier:
    """The in-memory twin: records deliveries; ``script`` scripts the next outcomes."""

    channel: str = "memory"
    script: list[Result] = field(default_factory=list)
    delivered: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    calls: int = 0

    async def send(self, alert: Mapping[str, Any], key: str) -> Result:
        self.calls += 1
        if self.script:
            result = self.script.pop(0)
            if result.outcome is not Outcome.DELIVERED:
                return result
        self.delivered.setdefault(key, alert)
        return Result(Outcome.DELIVERED)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str,
           *, now: float | None = None, tolerance_s: float = 300) -> bool:
    """What a receiver runs: constant-time compare, and no replays older than 5 minutes."""
    if abs((now if now is not None else time.time()) - float(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str],
    timeout_s: float, *, delivered: frozenset[int] = frozenset(),
) -> Result:
    """POST and classify the answer: 2xx (and ``delivered``) delivered; 429, 5xx and network
    errors retried (with ``Retry-After`` when given); any other 4xx rejected."""
    try:
        async with session.post(url, data=body, headers=dict(headers),
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            status = resp.status
            retry_after = resp.headers.get("Retry-After")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return Result(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
    if 200 <= status < 300 or status in delivered:
        return Result(Outcome.DELIVERED, str(status))
    if status == 429 or status >= 500:
        after = float(retry_after) if retry_after and retry_after.isdigit() else None
        return Result(Outcome.RETRY, f"HTTP {status}", after)
    return Result(Outcome.REJECTED, f"HTTP {status}")


@dataclass
class WebhookNotifier:
    url: str
    secret: bytes
    session: aiohttp.ClientSession
    timeout_s: float = 5.0
    channel: str = "webhook"

    async def send(self, alert: Mapping[str, Any], key: str) -> Result:
        body = orjson.dumps(alert)
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "X-Safetour-Timestamp": ts,
            "X-Safetour-Signature": sign(self.secret, ts, body),
        }
        return await post(self.session, self.url, body, headers, self.timeout_s)


def read_secret(env: Mapping[str, str], name: str) -> bytes:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (never from the repo)."""
    if env.get(f"{name}_FILE"):
        with open(env[f"{name}_FILE"], "rb") as f:
            return f.read().strip()
    value = env.get(name)
    if not value:
        from schemas import ConfigError  # noqa: PLC0415

        raise ConfigError(f"set {name} or {name}_FILE")
    return value.encode()


DeadLetter = Callable[[bytes | None, bytes], Awaitable[None]]


@dataclass
class AlertHandler:
    """What a notifier does with one record of the alerts topic: decode it (a malformed
    record goes to the notify DLQ with outcome ``malformed``, counted and logged, and the next
    record is handled), route it, deliver it, dead-letter it if delivery failed."""

    notifier: Notifier
    channel: str
    route: Route
    policy: RetryPolicy
    dead_letter: DeadLetter
    metrics: Metrics
    rejects: InternalRejects
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def handle(self, topic: str, partition: int, offset: int, key: bytes | None,
                     value: bytes | None) -> Outcome | None:
        """The outcome, ``None`` for an alert the route does not want or a malformed one."""
        from .rejects import malformed_dlq_record  # noqa: PLC0415

        alert = decode_alert(value)
        if isinstance(alert, Rejection):
            self.rejects.count(topic, alert, f"{partition}/{offset}")
            await self.dead_letter(key, orjson.dumps(malformed_dlq_record(
                alert, self.channel, value=value, topic=topic, partition=partition,
                offset=offset, key=key)))
            return None
        if not self.route.wants(alert):
            return None
        channel = self.channel
        result = await deliver(self.notifier, alert, self.policy, sleep=self.sleep,
                               on_retry=lambda r: self.metrics.notifier_retries.labels(
                                   channel).inc())
        if result.outcome is Outcome.DELIVERED:
            self.metrics.notifier_deliveries.labels(channel).inc()
            log.info("%s delivered %s", channel, idempotency_key(alert))
        else:
            self.metrics.notifier_failures.labels(channel).inc()
            log.warning("%s dead-lettered %s: %s", channel, idempotency_key(alert),
                        result.reason)
            await self.dead_letter(key, orjson.dumps(notify_dlq_record(alert, channel,
                                                                       result)))
        return result.outcome


def build_notify_app(settings: Any, notifier_factory: Callable[[aiohttp.ClientSession], Notifier],
                     channel: str, route: Route, policy: RetryPolicy) -> Any:
    """A faust app of its own (consumer group ``<app_id>-notify-<channel>``): a slow channel
    never holds back another, and a restarted notifier resumes from its committed offset.
    Offsets commit after delivery (at least once); receivers drop repeats by idempotency key.
    """
    from .metrics import Metrics  # noqa: PLC0415
    from .rejects import InternalRejects  # noqa: PLC0415
    from .transport import IdempotentApp  # noqa: PLC0415

    group = f"{settings.app_id}-notify-{channel}"
    datadir = settings.state_dir / "faust" / group
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = IdempotentApp(group, **settings.kafka.faust_kwargs(), store="memory://",
                        autodiscover=False, datadir=str(datadir), web_enabled=False,
                        consumer_auto_offset_reset="earliest",
                        broker_session_timeout=settings.session_timeout_s)
    alerts = app.topic(settings.topics.alerts, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    dlq = app.topic(settings.topics.notify_dlq, key_type=bytes, value_type=bytes,
                    key_serializer="raw", value_serializer="raw")
    metrics = Metrics()
    rejects = InternalRejects.of(f"notify-{channel}", metrics, log)
    session: list[aiohttp.ClientSession] = []

    async def dead_letter(key: bytes | None, value: bytes) -> None:
        await dlq.send(key=key, value=value)

    async def notify(stream: Any) -> None:
        if not session:
            session.append(aiohttp.ClientSession())
        handler = AlertHandler(notifier_factory(session[0]), channel, route, policy,
                               dead_letter, metrics, rejects)
        async for event in stream.events():
            if undecodable_info(event.message) is not None:
                # A record batch this process could not decode (agents/kafka_safety.py
                # skipped it and logged it): no alert to deliver.
                continue
            m = event.message
            await handler.handle(m.topic, m.partition, m.offset, event.key, event.value)

    app.agent(alerts, name=f"safetour.notify.{channel}")(notify)
    return app


LINE_MAX_UTF16 = 5000


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def cap_utf16(text: str, limit: int = LINE_MAX_UTF16) -> str:
    """Cut ``text`` to at most ``limit`` UTF-16 code units (LINE counts those), never in the
    middle of a character, ending with an ellipsis when cut."""
    if utf16_units(text) <= limit:
        return text
    out, used = [], 0
    for ch in text:
        n = utf16_units(ch)
        if used + n > limit - 1:
            break
        out.append(ch)
        used += n
    return "".join(out) + "…"


def line_text(alert: Mapping[str, Any]) -> str:
    """Thai first, English after (LINE Messaging API push text, capped at 5,000 units)."""
    msg = alert.get("message") or {}
    return cap_utf16(f"{msg.get('th', '')}\n\n{msg.get('en', '')}".strip())


@dataclass
class LineNotifier:
    """LINE Messaging API push (LINE Notify closed on 31 March 2025).

    ``POST {base_url}/v2/bot/message/push`` with a Bearer channel token and
    ``X-Line-Retry-Key``: a UUID derived from the alert, so a retry after a timeout is not a
    second message; LINE answers a repeat with 409, which counts as delivered."""

    token: bytes
    to: str
    session: aiohttp.ClientSession
    base_url: str = "https://api.line.me"
    timeout_s: float = 10.0
    channel: str = "line"

    async def send(self, alert: Mapping[str, Any], key: str) -> Result:
        import uuid  # noqa: PLC0415

        body = orjson.dumps({"to": self.to, "messages": [{"type": "text",
                                                           "text": line_text(alert)}]})
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.token.decode()}",
            "X-Line-Retry-Key": str(uuid.uuid5(uuid.NAMESPACE_URL, f"safetour:{key}")),
        }
        # 409: LINE accepted this retry key before, so the message is out already.
        return await post(self.session, f"{self.base_url}/v2/bot/message/push", body, headers,
                          self.timeout_s, delivered=frozenset({409}))
