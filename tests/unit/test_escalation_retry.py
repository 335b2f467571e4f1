"""The escalator does not give up on an open episode (agents/delivery/escalate.py
:class:`Escalations`): retries at the capped backoff past ``max_attempts``, other
escalations are not held back, and an undelivered one is dead-lettered once its episode is
acknowledged or resolved."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from agents.delivery.escalate import Escalations
from agents.delivery.notify import Outcome, Result, RetryPolicy
from agents.metrics import Metrics
from streams.escalation import EscalationTracker

AFTER = 60_000


@dataclass
class Receiver:
    down: set[str] = field(default_factory=set)
    reject: set[str] = field(default_factory=set)
    channel: str = "duty"
    sent: list[str] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)

    async def send(self, alert: Mapping[str, Any], key: str, *,
                   delayed_s: int | None = None) -> Result:
        aid = str(alert["alert_id"])
        self.sent.append(aid)
        if aid in self.reject:
            return Result(Outcome.REJECTED, "HTTP 400")
        if aid in self.down:
            return Result(Outcome.RETRY, "HTTP 503")
        self.delivered.append(aid)
        return Result(Outcome.DELIVERED)


@dataclass
class Clock:
    t: float = 0.0

    def __call__(self) -> float:
        return self.t


def critical(aid: str) -> dict[str, Any]:
    return {"alert_id": aid, "zone_id": aid.split(":", maxsplit=1)[0], "level": "critical",
            "previous_level": "high", "status": "escalated", "seq": 1,
            "ts": "2026-02-16T13:00:00.000Z", "message": {"th": "ท", "en": "e"}}


def setup(receiver: Receiver, max_attempts: int = 2) -> tuple[
        Escalations, EscalationTracker, list[tuple[str, Result]], Clock]:
    recorded: list[tuple[str, Result]] = []

    async def record(alert: dict[str, Any], result: Result) -> None:
        recorded.append((str(alert["alert_id"]), result))

    clock = Clock()
    policy = RetryPolicy(max_attempts=max_attempts, base_s=1.0, cap_s=4.0)
    esc = Escalations(receiver, policy, record, Metrics(), clock=clock,
                      rng=random.Random(1))
    return esc, EscalationTracker(AFTER), recorded, clock


@pytest.mark.asyncio
async def test_an_open_episode_is_escalated_past_max_attempts_then_delivered() -> None:
    """Failed before: deliver() gave up after max_attempts and the escalation went to the
    DLQ while nobody had acknowledged the critical alert."""
    receiver = Receiver(down={"za:1"})
    esc, tracker, recorded, clock = setup(receiver)
    stop = asyncio.Event()
    tracker.on_alert(critical("za:1"), 0)
    esc.due(tracker.due(AFTER))
    for _ in range(10):  # five times max_attempts; capped backoff: 4 s at most
        await esc.run(AFTER, stop, 1.0)
        clock.t += 4.0
    assert receiver.sent == ["za:1"] * 10
    assert recorded == []
    assert esc.trying["za:1"].next_at - clock.t <= 0.0  # the cap holds
    receiver.down.clear()
    await esc.run(AFTER, stop, 1.0)
    assert receiver.delivered == ["za:1"]
    assert [(aid, r.outcome, r.attempts) for aid, r in recorded] == [
        ("za:1", Outcome.DELIVERED, 11)]
    assert esc.trying == {}


@pytest.mark.asyncio
async def test_a_failing_escalation_does_not_hold_back_the_others() -> None:
    receiver = Receiver(down={"za:1"}, reject={"zc:1"})
    esc, tracker, recorded, _ = setup(receiver)
    for aid in ("za:1", "zb:1", "zc:1"):
        tracker.on_alert(critical(aid), 0)
    esc.due(tracker.due(AFTER))
    await esc.run(AFTER, asyncio.Event(), 1.0)
    assert receiver.delivered == ["zb:1"]
    assert {aid: r.outcome for aid, r in recorded} == {
        "zb:1": Outcome.DELIVERED, "zc:1": Outcome.REJECTED}  # rejected: DLQ at once
    assert list(esc.trying) == ["za:1"]
    await esc.run(AFTER, asyncio.Event(), 1.0)  # its backoff has not passed: no try
    assert receiver.sent.count("za:1") == 1


@pytest.mark.asyncio
async def test_an_undelivered_escalation_is_dead_lettered_once_the_episode_closes() -> None:
    receiver = Receiver(down={"za:1", "zb:1"})
    esc, tracker, recorded, clock = setup(receiver, max_attempts=6)
    for aid in ("za:1", "zb:1"):
        tracker.on_alert(critical(aid), 0)
    esc.due(tracker.due(AFTER))
    for _ in range(3):
        await esc.run(AFTER, asyncio.Event(), 1.0)
        clock.t += 4.0
    esc.closed("za:1")  # acknowledged on the dashboard
    esc.closed("zb:1")  # resolved
    await esc.run(AFTER, asyncio.Event(), 1.0)
    assert receiver.sent.count("za:1") == 3  # no try after the close
    assert [(aid, r.outcome, r.attempts) for aid, r in recorded] == [
        ("za:1", Outcome.FAILED, 3), ("zb:1", Outcome.FAILED, 3)]
    assert "acknowledged or resolved" in recorded[0][1].reason
    assert esc.trying == {}


def test_an_ack_or_a_resolution_is_reported_as_closing_its_episode() -> None:
    import orjson  # noqa: PLC0415

    from agents.delivery.escalate import _apply  # noqa: PLC0415
    from agents.delivery.notify import Route  # noqa: PLC0415

    t = EscalationTracker(AFTER)
    closed: set[str] = set()
    resolved = critical("za:1") | {"level": "normal", "status": "resolved",
                                   "previous_level": "critical"}
    for topic, value in [("alerts", orjson.dumps(critical("zb:1"))),
                         ("alerts", orjson.dumps(resolved)),
                         ("acks", orjson.dumps({"alert_id": "zc:1", "operator": "o",
                                                "ts": "2026-02-16T13:00:00.000Z"}))]:
        _apply(t, Route("critical"), topic, "alerts", "acks", b"k", value, 1_000,
               closed=closed)
    assert closed == {"za:1", "zc:1"}
