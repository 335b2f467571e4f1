"""LINE Messaging API push against a local server that behaves as the API documents:
Bearer token, X-Line-Retry-Key, 429 when rate-limited, 409 for a retry key seen before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from agents.delivery.notify import (
    LineNotifier,
    Outcome,
    RetryPolicy,
    cap_utf16,
    deliver,
    line_text,
    utf16_units,
)

from .httpfakes import Sleeps, serve

TOKEN = b"channel-token-for-tests"
ALERT = {"alert_id": "wat-yai-vihara:1:a", "zone_id": "wat-yai-vihara", "level": "critical",
         "status": "raised", "ts": "2026-02-15T12:30:00.000Z",
         "message": {"th": "วิหาร: ระดับวิกฤต", "en": "Vihara: level CRITICAL"}}


@dataclass
class FakeLine:
    rate_limited: int = 1  # answer 429 this many times first
    seen: set[str] = field(default_factory=set)
    pushed: list[dict] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    async def push(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN.decode()}":
            return self.reply(401)
        body = orjson.loads(await request.read())
        text = body["messages"][0]["text"]
        if not 1 <= len(body["messages"]) <= 5 or utf16_units(text) > 5000:
            return self.reply(400)
        if self.rate_limited:
            self.rate_limited -= 1
            return self.reply(429, {"Retry-After": "2"})
        key = request.headers["X-Line-Retry-Key"]
        if key in self.seen:
            return self.reply(409)
        self.seen.add(key)
        self.pushed.append(body)
        return self.reply(200)

    def reply(self, status: int, headers: dict[str, str] | None = None) -> web.Response:
        self.statuses.append(status)
        return web.json_response({}, status=status, headers=headers)


@pytest_asyncio.fixture
async def line_api() -> AsyncIterator[tuple[FakeLine, str]]:
    fake = FakeLine()
    async with serve("/v2/bot/message/push", fake.push) as base:
        yield fake, base


@pytest.mark.asyncio
async def test_429_then_200_then_a_repeat_answered_409_is_one_message(
    line_api: tuple[FakeLine, str],
) -> None:
    fake, base = line_api
    sleeps = Sleeps()
    async with aiohttp.ClientSession() as session:
        line = LineNotifier(TOKEN, "U1234567890abcdef", session, base_url=base)
        first = await deliver(line, ALERT, RetryPolicy(), sleep=sleeps)
        repeat = await deliver(line, ALERT, RetryPolicy(), sleep=sleeps)
    assert (first.outcome, first.attempts) == (Outcome.DELIVERED, 2)
    assert repeat.outcome is Outcome.DELIVERED
    assert fake.statuses == [429, 200, 409]
    assert sleeps == [2.0]  # Retry-After honoured
    (pushed,) = fake.pushed
    assert pushed["to"] == "U1234567890abcdef"
    assert pushed["messages"][0]["text"].startswith("วิหาร")  # Thai first, English after


@pytest.mark.asyncio
async def test_a_wrong_token_is_rejected_without_retries(line_api: tuple[FakeLine, str]) -> None:
    _, base = line_api
    async with aiohttp.ClientSession() as session:
        line = LineNotifier(b"wrong", "U1", session, base_url=base)
        result = await deliver(line, ALERT, RetryPolicy(), sleep=Sleeps())
    assert (result.outcome, result.attempts) == (Outcome.REJECTED, 1)


def test_text_is_capped_at_5000_utf16_units_without_splitting_characters() -> None:
    emoji = "😀" * 3000  # 2 UTF-16 units each
    capped = cap_utf16(emoji)
    assert utf16_units(capped) <= 5000
    assert capped.endswith("…")
    assert set(capped[:-1]) == {"😀"}
    long_alert = ALERT | {"message": {"th": "ก" * 4000, "en": "e" * 4000}}
    assert utf16_units(line_text(long_alert)) <= 5000
    assert line_text(ALERT) == "วิหาร: ระดับวิกฤต\n\nVihara: level CRITICAL"
