"""Stand-downs (streams/escalation.py :class:`StandDowns`, agents/delivery/escalate.py): an
episode whose escalation was delivered and which is then resolved or acknowledged gets one
stand-down on the escalation channel, in Thai and English, marked as a drill's when it is
one; retried, then dead-lettered; never repeated after a restart reads the log back."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from agents.delivery.escalate import _apply
from agents.delivery.notify import Outcome, Route, idempotency_key, line_text
from schemas import Ack, encode_ack
from streams.escalation import EscalationTracker, StandDowns, stand_down_alert

from .test_escalation_retry import AFTER, Receiver, critical, setup

ALERTS, ACKS, LOG = "t.alerts", "t.acks", "t.escalations"
T0 = 1_771_246_800_000  # 2026-02-16T13:00:00Z, 20:00 ICT


def resolved(aid: str) -> dict[str, Any]:
    return critical(aid) | {"level": "normal", "previous_level": "critical",
                            "status": "resolved", "seq": 2,
                            "message": {"th": "กลับสู่ภาวะปกติ", "en": "back to normal"}}


def logged(aid: str, *, channel: str = "duty", outcome: str = "delivered",
           stand_down: bool = False) -> bytes:
    rec: dict[str, Any] = {"alert_id": aid, "channel": channel, "outcome": outcome,
                           "ts": "2026-02-16T13:01:00.000Z"}
    if stand_down:
        rec["stand_down"] = True
    return orjson.dumps(rec)


def feed(sd: StandDowns, records: list[tuple[str, str, bytes]], at_ms: int = T0) -> None:
    tracker = EscalationTracker(AFTER)
    for topic, key, value in records:
        assert _apply(tracker, Route("critical"), topic, ALERTS, ACKS, key.encode(), value,
                      at_ms, stand_downs=sd, channel="duty") is None


def test_an_escalated_episode_that_resolves_is_stood_down_once_in_thai_and_english(
) -> None:
    sd = StandDowns()
    feed(sd, [(ALERTS, "za:1", orjson.dumps(critical("za:1"))),
              (ALERTS, "zb:1", orjson.dumps(critical("zb:1"))),  # never escalated
              (LOG, "za:1", logged("za:1")),
              (ALERTS, "za:1", orjson.dumps(resolved("za:1"))),
              (ALERTS, "zb:1", orjson.dumps(resolved("zb:1")))])
    (due,) = sd.due(T0)
    assert sd.due(T0) == []  # once
    out = stand_down_alert(due)
    assert out["stand_down"] == {"reason": "resolved", "by": None,
                                 "at": "2026-02-16T13:00:00.000Z"}
    assert out["status"] == "resolved"
    assert "escalation" not in out
    assert out["message"]["en"].startswith("STAND DOWN: the escalated critical alert is "
                                           "resolved\nback to normal")
    assert out["message"]["th"].startswith("ยกเลิกการยกระดับ")
    assert idempotency_key(out) == "za:1:stand-down"
    assert idempotency_key(critical("za:1") | {"escalation": {}}) != idempotency_key(out)


def test_an_acknowledged_escalated_episode_says_who_and_when_and_a_drill_is_marked(
) -> None:
    sd = StandDowns()
    drill = critical("drill-za:1") | {"exercise": True}
    feed(sd, [(ALERTS, "drill-za:1", orjson.dumps(drill)),
              (LOG, "drill-za:1", logged("drill-za:1")),
              (ACKS, "drill-za:1", encode_ack(Ack("drill-za:1", "somchai", T0))),
              (ALERTS, "drill-za:1", orjson.dumps(resolved("drill-za:1") | {
                  "exercise": True}))])  # the first word counts: the acknowledgement
    (due,) = sd.due(T0)
    out = stand_down_alert(due)
    assert out["stand_down"]["reason"] == "acknowledged"
    assert out["stand_down"]["by"] == "somchai"
    assert "acknowledged by somchai at 20:00 ICT, 16 Feb 2026" in out["message"]["en"]
    assert "somchai รับทราบ" in out["message"]["th"]
    assert "2569" in out["message"]["th"]  # Buddhist Era
    assert out["exercise"] is True
    assert line_text(out).startswith("[ฝึกซ้อม / DRILL]\nยกเลิกการยกระดับ")


def test_a_restart_reading_the_log_back_repeats_none_and_sends_the_missing_one() -> None:
    """The log says delivered (this channel) or stood down, in whatever order the three
    topics are read back; another channel's log and a failed escalation change nothing."""
    sd = StandDowns()
    feed(sd, [(LOG, "za:1", logged("za:1")),
              (ALERTS, "za:1", orjson.dumps(resolved("za:1") | {"previous_level": "high"}))])
    assert sd.due(T0) == []  # no critical record of it seen: not an episode it escalated
    sd = StandDowns()
    records = [(ALERTS, k, orjson.dumps(critical(k))) for k in ("za:1", "zb:1", "zc:1",
                                                                "zd:1")]
    records += [(ALERTS, k, orjson.dumps(resolved(k))) for k in ("za:1", "zb:1", "zc:1",
                                                                 "zd:1")]
    records += [(LOG, "za:1", logged("za:1")),  # escalated after (in the replay) resolving
                (LOG, "zb:1", logged("zb:1")), (LOG, "zb:1", logged("zb:1", stand_down=True)),
                (LOG, "zc:1", logged("zc:1", channel="other")),
                (LOG, "zd:1", logged("zd:1", outcome="failed")),
                (LOG, "ze:1", b"not json")]
    feed(sd, records)
    assert [s.alert["alert_id"] for s in sd.due(T0)] == ["za:1"]


@pytest.mark.asyncio
async def test_a_stand_down_is_retried_then_dead_lettered_and_holds_back_nothing() -> None:
    receiver = Receiver(down={"za:1"})
    esc, _, recorded, clock = setup(receiver, max_attempts=3)
    sd = StandDowns()
    feed(sd, [(ALERTS, k, orjson.dumps(critical(k))) for k in ("za:1", "zb:1")]
         + [(LOG, k, logged(k)) for k in ("za:1", "zb:1")]
         + [(ALERTS, k, orjson.dumps(resolved(k))) for k in ("za:1", "zb:1")])
    esc.stand_down(sd.due(T0))
    stop = asyncio.Event()
    await esc.run(AFTER, stop, 1.0)
    assert receiver.delivered == ["zb:1"]
    assert [(a, r.outcome) for a, r in recorded] == [("zb:1", Outcome.DELIVERED)]
    for _ in range(4):
        clock.t += 4.0
        await esc.run(AFTER, stop, 1.0)
    assert receiver.sent.count("za:1") == 3
    assert [(a, r.outcome, r.attempts) for a, r in recorded][1:] == [
        ("za:1", Outcome.FAILED, 3)]
    assert esc.standing_down == {}
