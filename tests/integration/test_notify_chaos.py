"""Chaos: a webhook receiver down for 30 s while alerts flow (issue 13, item 8).

20 alerts over four zones (criticals among them), then a replay of five of them, published
while nothing listens on the receiver's port. A second channel (the in-memory twin) gets
every alert within seconds meanwhile. When the receiver comes up, every alert reaches it
exactly once (counted by (alert_id, seq)), each marked as delayed, nothing is
dead-lettered, and the notifier never gave up although every alert failed more than
``max_attempts`` times."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from agents.delivery.channel_consumer import run_notify
from agents.delivery.channels import ChannelRunner
from agents.delivery.notify import (
    MemoryNotifier,
    Notifier,
    Result,
    RetryPolicy,
    Route,
    WebhookNotifier,
    verify,
)
from agents.topics import create_topics, topic_specs
from schemas import format_ts

from .conftest import free_port, make_settings, payloads
from .test_recovery import publish

log = logging.getLogger(__name__)
SECRET = b"chaos-secret"
DOWN_S = 30.0
LEVELS = ["elevated", "high", "critical", "critical", "high"]


@dataclass
class TimedTwin(MemoryNotifier):
    at: dict[str, float] = field(default_factory=dict)

    async def send(self, alert: Mapping[str, Any], key: str, *,
                   delayed_s: int | None = None) -> Result:
        self.at.setdefault(key, time.monotonic())
        return await super().send(alert, key, delayed_s=delayed_s)


async def until(cond: Callable[[], object], within: float) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.05)


def alerts_now(n: int, start_s: float) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        zone = f"zone-{i % 4}"
        out.append({"alert_id": f"{zone}:{i // 4}:c", "zone_id": zone,
                    "level": LEVELS[i // 4], "previous_level": "normal",
                    "status": "raised", "seq": 1, "ts": format_ts(round(start_s * 1000)),
                    "density": 3.0, "message": {"th": "ท", "en": "e"}})
    return out


def test_a_receiver_down_for_30_s_gets_every_alert_once_marked_delayed(
    kafka: str, tmp_path: Path
) -> None:
    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    got: Counter[str] = Counter()
    delayed: dict[str, int] = {}
    bad: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(SECRET, request.headers["X-Safetour-Timestamp"], body,
                      request.headers["X-Safetour-Signature"]):
            bad.append("signature")
            return web.Response(status=401)
        a = orjson.loads(body)
        key = f"{a['alert_id']}:{a['seq']}"
        got[key] += 1
        delayed[key] = int(request.headers.get("X-Safetour-Delayed", "-1"))
        return web.Response(status=204)

    twin = TimedTwin(channel="memory")
    runners: dict[str, ChannelRunner] = {}
    policy = RetryPolicy(max_attempts=3, base_s=0.2, cap_s=2.0)

    async def scenario() -> None:
        stop = asyncio.Event()

        def webhook(session: aiohttp.ClientSession) -> Notifier:
            return WebhookNotifier(url, SECRET, session, timeout_s=2.0)

        tasks = [asyncio.create_task(run_notify(
            s, factory, channel, Route("elevated"), policy, stop, delayed_after_s=15.0,
            on_runner=lambda r: runners.__setitem__(r.channel, r)))
            for channel, factory in (("webhook", webhook), ("memory", lambda _: twin))]
        t0 = time.monotonic()
        alerts = alerts_now(20, time.time())
        published: dict[str, float] = {}
        for wave in (alerts[:10], alerts[10:]):
            await publish(kafka, s.topics.alerts,
                          [(a["zone_id"].encode(), orjson.dumps(a)) for a in wave])
            published |= {f"{a['alert_id']}:1": time.monotonic() for a in wave}
            await asyncio.sleep(3)  # the second wave a little later (scenario pacing)
        # The worker crashed and replayed: five identical alerts again.
        await publish(kafka, s.topics.alerts,
                      [(a["zone_id"].encode(), orjson.dumps(a)) for a in alerts[3:8]])
        # The second channel is not held back by the dead receiver.
        await until(lambda: len(twin.delivered) >= 20, within=15)
        assert got == {}  # nothing listens yet
        await asyncio.sleep(max(0.0, t0 + DOWN_S - time.monotonic()))
        app = web.Application()
        app.router.add_post("/hook", hook)
        web_runner = web.AppRunner(app)
        await web_runner.setup()
        await web.TCPSite(web_runner, "127.0.0.1", port).start()
        up = time.monotonic()
        try:
            await until(lambda: len(got) >= 20, within=12)
            recovered = time.monotonic() - up
            await asyncio.sleep(1.0)  # a repeat, if any, would arrive now
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await web_runner.cleanup()
        late = {k: twin.at[k] - published[k] for k in published}
        log.warning("receiver back: all 20 delivered in %.2f s; memory channel max "
                    "lateness %.2f s", recovered, max(late.values()))
        assert max(late.values()) < 10, late
        assert recovered < 10

    asyncio.run(scenario())
    assert bad == []
    assert len(got) == 20
    assert set(got.values()) == {1}, got  # exactly once by (alert_id, seq)
    assert all(d >= 15 for d in delayed.values()), delayed  # each marked as delayed
    hook_runner = runners["webhook"]
    assert hook_runner.dead_lettered == 0
    assert hook_runner.duplicates == 5
    assert runners["memory"].duplicates == 5
    retries = hook_runner.metrics.notifier_retries.labels("webhook")._value.get()
    assert retries > 20 * policy.max_attempts  # failed past max_attempts, never gave up
    assert payloads(kafka, s.topics.notify_dlq) == []
