"""Over the real broker: a `high` channel restarted between an episode's step down and its
resolution still hears the resolution (the restart rebuilds the routed episodes from the
alerts topic), and hears nothing twice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from agents.delivery.channel_consumer import run_notify
from agents.delivery.channels import ChannelRunner
from agents.delivery.notify import MemoryNotifier, RetryPolicy, Route
from agents.topics import create_topics, topic_specs

from .conftest import make_settings
from .test_recovery import publish


def step(level: str, previous: str, status: str, seq: int) -> dict[str, Any]:
    return {"alert_id": "z1:restart:x", "zone_id": "z1", "level": level,
            "previous_level": previous, "status": status, "seq": seq,
            "ts": f"2026-02-16T13:0{seq}:00.000Z", "message": {"th": "ท", "en": "e"}}


async def _serve_until(s: Any, twin: MemoryNotifier, done: Any) -> None:
    stop = asyncio.Event()
    runners: list[ChannelRunner] = []
    task = asyncio.create_task(run_notify(
        s, lambda session: twin, "memory", Route("high"), RetryPolicy(), stop, grace_s=1.0,
        on_runner=runners.append))
    deadline = time.monotonic() + 30
    while not (runners and done(twin) and runners[0].queue.held == 0
               and not runners[0].book.committable()):
        assert time.monotonic() < deadline, f"not done in time: {sorted(twin.delivered)}"
        assert not task.done(), task
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 15)


def test_a_restart_between_step_down_and_resolution_still_sends_the_resolution(
    kafka: str, tmp_path: Path
) -> None:
    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    before = [step("elevated", "normal", "raised", 1), step("high", "elevated", "escalated", 2),
              step("elevated", "high", "deescalated", 3)]
    asyncio.run(publish(kafka, s.topics.alerts, [(b"z1", orjson.dumps(a)) for a in before]))
    first = MemoryNotifier()
    asyncio.run(_serve_until(s, first, lambda t: len(t.delivered) >= 2))
    assert sorted(first.delivered) == ["z1:restart:x:2", "z1:restart:x:3"]
    asyncio.run(publish(kafka, s.topics.alerts, [
        (b"z1", orjson.dumps(step("normal", "elevated", "resolved", 4)))]))
    again = MemoryNotifier()
    asyncio.run(_serve_until(s, again, lambda t: len(t.delivered) >= 1))
    assert list(again.delivered) == ["z1:restart:x:4"]
