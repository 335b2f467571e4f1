"""Notifiers: one small interface per channel, retries with backoff, a dead letter at the end.

    Notifier.send(alert, key) -> Result(outcome, reason, retry_after_s)
        DELIVERED   the channel has it (2xx; for LINE also 409 "already sent")
        RETRY       worth another try (timeout, connection refused, 429, 5xx)
        REJECTED    will never work as it is (4xx but 429): dead-letter at once

``deliver`` retries RETRY outcomes with exponential backoff and full jitter (honouring a
``Retry-After``, capped) up to ``RetryPolicy.max_attempts``, then gives up with a FAILED result
that the caller dead-letters to ``safetour.notify-dlq.v1``. Every attempt of one alert message
carries the same idempotency key (``alert_id:seq``, or ``alert_id:status:ts`` for an alert
without ``seq``), so a receiver can drop repeats, including the identical alert a replay may
publish again. The channel runner (``agents/delivery/channels.py``: per-channel bounded priority
queue, dedup, offsets committed after delivery) is what ``safetour notify`` runs.

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
from typing import Any, Protocol

import aiohttp
import orjson

from streams import level_rank

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
    """``delayed_s``: the alert goes out this many seconds after its ``ts`` (more than the
    runner's ``delayed_after_s``), so the channel marks it as late; None when on time."""

    channel: str

    async def send(self, alert: Mapping[str, Any], key: str, *,
                   delayed_s: int | None = None) -> Result: ...


def idempotency_key(alert: Mapping[str, Any]) -> str:
    """``alert_id:seq`` when the alert carries its per-episode ``seq`` (exact: a replay
    publishes the same pair again), else ``alert_id:status:ts``. An escalation of the alert
    (``streams.escalation``) is a message of its own, so it gets a key of its own, and so
    does the episode's one stand-down (``alert_id:stand-down``)."""
    if alert.get("stand_down"):
        return f"{alert['alert_id']}:stand-down"
    seq = alert.get("seq")
    if isinstance(seq, int | float) and not isinstance(seq, bool) and seq >= 1:
        key = f"{alert['alert_id']}:{int(seq)}"
    else:
        key = f"{alert['alert_id']}:{alert['status']}:{alert['ts']}"
    return f"{key}:escalation" if alert.get("escalation") else key


def alert_epoch_s(alert: Mapping[str, Any]) -> float | None:
    """The alert's ``ts`` in epoch seconds (None when it is not a readable time)."""
    try:
        when = datetime.fromisoformat(str(alert["ts"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def lateness_s(alert: Mapping[str, Any], now_s: float, after_s: float) -> int | None:
    """Whole seconds the alert is late (sent more than ``after_s`` after its ``ts``), or
    None when it is on time."""
    at = alert_epoch_s(alert)
    if at is None or now_s - at <= after_s:
        return None
    return int(now_s - at)


DRILL_MARKER = "[ฝึกซ้อม / DRILL]"


def is_drill(alert: Mapping[str, Any]) -> bool:
    """An alert of a drill (``exercise: true``): every channel marks it."""
    return alert.get("exercise") is True


def delayed_marker(delayed_s: int) -> str:
    """The short marker a text channel (LINE, the e-mail subject) puts first."""
    minutes = delayed_s // 60
    took = f"{minutes} min" if minutes else f"{delayed_s} s"
    return f"[ล่าช้า {took} / DELAYED {took}]"


@dataclass(frozen=True, slots=True)
class Route:
    """Which alerts go to a channel: a minimum level, and optionally only some zones.
    ``wants`` judges one record alone (the escalator's filter); the notify channels route
    episode by episode (``agents/delivery/routing.py``: a channel that received an episode
    hears its step down below the level and its resolution)."""

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
    """``max_attempts`` before the DLQ (the channel runner keeps retrying past it while the
    alert's episode is open); backoff with full jitter, capped at ``cap_s``; a receiver's
    ``Retry-After`` is honoured up to ``retry_after_cap_s`` (a receiver cannot stall a
    channel for a day)."""

    max_attempts: int = 6
    base_s: float = 0.5
    cap_s: float = 60.0
    retry_after_cap_s: float = 300.0

    def delay(self, attempt: int, rng: random.Random, retry_after_s: float | None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)], at least Retry-After
        (itself at most ``retry_after_cap_s``)."""
        backoff = rng.uniform(0, min(self.cap_s, self.base_s * 2 ** min(attempt, 60)))
        return max(backoff, min(retry_after_s or 0.0, self.retry_after_cap_s))


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

    async def send(self, alert: Mapping[str, Any], key: str, *,
                   delayed_s: int | None = None) -> Result:
        await self.bucket.acquire()
        return await self.inner.send(alert, key, delayed_s=delayed_s)


async def deliver(
    notifier: Notifier,
    alert: Mapping[str, Any],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[Result], None] | None = None,
) -> Result:
    """Send until delivered, rejected, or out of attempts (the escalator's loop; the
    notifiers run :class:`agents.delivery.channels.ChannelRunner`)."""
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

    delayed: dict[str, int] = field(default_factory=dict)

    async def send(self, alert: Mapping[str, Any], key: str, *,
                   delayed_s: int | None = None) -> Result:
        self.calls += 1
        if self.script:
            result = self.script.pop(0)
            if result.outcome is not Outcome.DELIVERED:
                return result
        self.delivered.setdefault(key, alert)
        if delayed_s is not None:
            self.delayed.setdefault(key, delayed_s)
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
        # Delta-seconds only (an HTTP date is ignored); the policy caps it.
        after = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
        return Result(Outcome.RETRY, f"HTTP {status}", after)
    return Result(Outcome.REJECTED, f"HTTP {status}")


@dataclass
class WebhookNotifier:
    url: str
    secret: bytes
    session: aiohttp.ClientSession
    timeout_s: float = 5.0
    channel: str = "webhook"

    async def send(self, alert: Mapping[str, Any], key: str, *,
                   delayed_s: int | None = None) -> Result:
        body = orjson.dumps(alert)
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "X-Safetour-Timestamp": ts,
            "X-Safetour-Signature": sign(self.secret, ts, body),
        }
        if delayed_s is not None:
            headers["X-Safetour-Delayed"] = str(delayed_s)
        if is_drill(alert):  # the payload carries "exercise": true as well
            headers["X-Safetour-Exercise"] = "1"
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


def line_text(alert: Mapping[str, Any], delayed_s: int | None = None) -> str:
    """Thai first, English after (LINE Messaging API push text, capped at 5,000 units);
    a late alert starts with the delayed marker."""
    msg = alert.get("message") or {}
    text = f"{msg.get('th', '')}\n\n{msg.get('en', '')}".strip()
    if delayed_s is not None:
        text = f"{delayed_marker(delayed_s)}\n{text}"
    if is_drill(alert):
        text = f"{DRILL_MARKER}\n{text}"
    return cap_utf16(text)


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

    async def send(self, alert: Mapping[str, Any], key: str, *,
                   delayed_s: int | None = None) -> Result:
        import uuid  # noqa: PLC0415

        body = orjson.dumps({"to": self.to, "messages": [{"type": "text", "text": line_text(
            alert, delayed_s)}]})
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.token.decode()}",
            "X-Line-Retry-Key": str(uuid.uuid5(uuid.NAMESPACE_URL, f"safetour:{key}")),
        }
        # 409: LINE accepted this retry key before, so the message is out already.
        return await post(self.session, f"{self.base_url}/v2/bot/message/push", body, headers,
                          self.timeout_s, delivered=frozenset({409}))
