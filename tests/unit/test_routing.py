"""Every resolution reaches every channel that received the episode, and a channel hears an
episode's first step below its minimum level (agents/delivery/routing.py), also across a
notifier restart."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from agents.delivery.channels import ChannelRunner
from agents.delivery.notify import MemoryNotifier, RetryPolicy, Route
from agents.delivery.routing import Receipts
from agents.metrics import Metrics
from agents.rejects import InternalRejects

from .test_channels import P0, alert, poll, running, stopped


def step(n: int, level: str, previous: str, status: str, seq: int) -> dict[str, Any]:
    return alert(n, level, seq=seq, status=status) | {"previous_level": previous}


# An episode that reached high, stepped down to elevated, and ended.
EPISODE = [
    step(1, "elevated", "normal", "raised", 1),
    step(1, "high", "elevated", "escalated", 2),
    step(1, "elevated", "high", "deescalated", 3),
    step(1, "elevated", "elevated", "updated", 4),
    step(1, "normal", "elevated", "resolved", 5),
]


def high_runner(twin: MemoryNotifier) -> ChannelRunner:
    async def dead_letter(key: bytes | None, value: bytes) -> None:
        raise AssertionError("nothing is dead-lettered here")

    metrics = Metrics()
    return ChannelRunner(twin, Route("high"), RetryPolicy(base_s=0.01, cap_s=0.05),
                         dead_letter, metrics, InternalRejects.of(
                             "notify-t", metrics, logging.getLogger("test")), senders=1)


def test_a_high_channel_hears_the_step_down_once_and_the_resolution() -> None:
    """Failed before: the route dropped the step down and the resolution (it ended at
    elevated), so the high channel never heard that the episode ended."""
    receipts = Receipts(Route("high"))
    sent = [receipts.decide(a) for a in EPISODE]
    assert [s is not None for s in sent] == [False, True, True, False, True]
    down = sent[2]
    assert down is not None
    assert down["stepped_below"] == "high"
    assert down["message"]["en"].startswith("Stepped down below high")
    assert down["message"]["th"].startswith("ลดระดับต่ำกว่าระดับสูง")
    assert "stepped_below" not in (sent[1] or {})
    assert "stepped_below" not in (sent[4] or {})
    assert not receipts.received(EPISODE[0]["alert_id"])  # closed


def test_an_episode_the_channel_never_received_stays_away() -> None:
    receipts = Receipts(Route("high"))
    quiet = [step(2, "elevated", "normal", "raised", 1),
             step(2, "normal", "elevated", "resolved", 2)]
    assert [receipts.decide(a) for a in quiet] == [None, None]
    # Zones still filter, resolutions included.
    zoned = Receipts(Route("high", frozenset({"elsewhere"})))
    assert [zoned.decide(a) for a in EPISODE] == [None] * len(EPISODE)


def test_rising_again_and_stepping_down_again_is_heard_again_and_repeats_change_nothing(
) -> None:
    receipts = Receipts(Route("high"))
    seq = [step(3, "high", "normal", "raised", 1), step(3, "elevated", "high", "deescalated", 2),
           step(3, "high", "normal", "raised", 1),  # a worker replay repeats old records
           step(3, "elevated", "high", "deescalated", 2),
           step(3, "high", "elevated", "escalated", 3),
           step(3, "elevated", "high", "deescalated", 4)]
    out = [receipts.decide(a) for a in seq]
    assert [o is not None and o.get("stepped_below") for o in out] == [
        None, "high", None, False, None, "high"]
    assert out[2] is not None  # the repeat of a sent record is passed on (dedup skips it)


@pytest.mark.asyncio
async def test_a_restarted_notifier_still_sends_the_resolution_of_a_received_episode() -> None:
    """The episode reached high and stepped down before the restart; its resolution comes
    after. Failed before: the fresh runner had no memory of the episode and dropped it."""
    values = [orjson.dumps(a) for a in EPISODE]
    first = MemoryNotifier()
    r = high_runner(first)
    tasks = await running(r)
    for off, v in enumerate(values[:4]):
        await r.accept(P0, off, b"z1", v)
    await poll(lambda: r.queue.held == 0)
    await stopped(tasks)
    assert sorted(first.delivered) == ["z1:1:ab:2", "z1:1:ab:3"]
    committed = r.book.committable()[P0]
    assert committed == 4
    # Restart: a new runner, the partition read again from before the committed offset.
    again = MemoryNotifier()
    r2 = high_runner(again)
    r2.catch_up(P0, committed)
    tasks = await running(r2)
    for off, v in enumerate(values):
        await r2.accept(P0, off, b"z1", v)
    await poll(lambda: r2.queue.held == 0)
    await stopped(tasks)
    assert list(again.delivered) == ["z1:1:ab:5"]  # the resolution, and nothing sent twice
    assert r2.book.committable()[P0] == len(values)


@pytest.mark.asyncio
async def test_the_channel_runner_delivers_the_step_down_and_the_resolution() -> None:
    """Failed before: a high channel got only the escalation (``z1:1:ab:2``)."""
    twin = MemoryNotifier()
    r = high_runner(twin)
    tasks = await running(r)
    for off, a in enumerate(EPISODE):
        await r.accept(P0, off, b"z1", orjson.dumps(a))
    await poll(lambda: r.queue.held == 0)
    await stopped(tasks)
    assert sorted(twin.delivered) == ["z1:1:ab:2", "z1:1:ab:3", "z1:1:ab:5"]
    assert twin.delivered["z1:1:ab:3"]["stepped_below"] == "high"
    assert r.book.committable() == {P0: len(EPISODE)}
