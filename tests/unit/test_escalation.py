"""Escalation state machine, checked against a brute-force reference on random histories."""

from __future__ import annotations

import random
from typing import Any

import pytest

from streams.escalation import EscalationTracker, escalation_alert

AFTER = 60_000


def alert(aid: str, level: str, status: str = "raised") -> dict[str, Any]:
    return {"alert_id": aid, "level": level, "status": status}


def test_unacked_critical_escalates_once_after_the_delay() -> None:
    t = EscalationTracker(AFTER)
    t.on_alert(alert("a", "critical"), 1_000)
    assert t.due(60_999) == []
    assert t.next_due_ms() == 61_000
    [p] = t.due(61_000)
    assert p.alert["alert_id"] == "a"
    assert p.since_ms == 1_000
    t.on_escalated("a", 61_000)
    t.on_alert(alert("a", "critical", "escalated"), 62_000)  # a reminder: not a new episode
    assert t.due(10**9) == []


def test_escalation_message_says_how_long_in_thai_and_english() -> None:
    t = EscalationTracker(AFTER)
    a = alert("a", "critical") | {"message": {"th": "วิกฤต", "en": "critical"}}
    t.on_alert(a, 0)
    [p] = t.due(5 * 60_000)
    out = escalation_alert(p, 5 * 60_000)
    assert out["escalation"] == {"unacknowledged_since": "1970-01-01T00:00:00.000Z",
                                 "unacknowledged_s": 300}
    assert out["message"]["th"].startswith("ยกระดับแจ้งเตือน")
    assert "5 นาที" in out["message"]["th"]
    assert out["message"]["en"].endswith("not acknowledged for 5 min\ncritical")
    assert "escalation" not in a  # the tracked alert is not changed


def test_ack_or_resolution_cancels_but_deescalation_does_not() -> None:
    t = EscalationTracker(AFTER)
    for aid in "abc":
        t.on_alert(alert(aid, "critical"), 0)
    t.on_ack("a", 10)
    t.on_alert(alert("b", "normal", "resolved"), 20)
    t.on_alert(alert("c", "high", "deescalated"), 30)
    due = t.due(AFTER)
    assert [p.alert["alert_id"] for p in due] == ["c"]
    assert due[0].alert["level"] == "high"  # the newest alert of the episode is what is sent


def test_below_critical_never_escalates_and_ack_before_alert_counts() -> None:
    t = EscalationTracker(AFTER)
    t.on_alert(alert("a", "high"), 0)
    t.on_ack("b", 0)
    t.on_alert(alert("b", "critical"), 5)
    assert t.due(10 * AFTER) == []


def test_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="after_ms"):
        EscalationTracker(-1)


@pytest.mark.parametrize("seed", range(20))
def test_matches_reference_on_random_histories(seed: int) -> None:
    rng = random.Random(seed)
    t = EscalationTracker(AFTER)
    ids = [f"z{i}" for i in range(5)]
    history: list[tuple[int, str, str, dict[str, Any] | None]] = []
    now = 0
    for _ in range(60):
        now += rng.randrange(0, 30_000)
        aid = rng.choice(ids)
        kind = rng.choice(["alert", "alert", "alert", "ack"])
        a = None
        if kind == "alert":
            level = rng.choice(["elevated", "high", "critical", "normal"])
            a = alert(aid, level, "resolved" if level == "normal" else "raised")
            t.on_alert(a, now)
        else:
            t.on_ack(aid, now)
        history.append((now, kind, aid, a))
    got = {p.alert["alert_id"] for p in t.due(now)}

    # Reference: replay each episode's history from scratch.
    want = set()
    for aid in ids:
        first_critical = None
        closed = False
        for ts, kind, i, a in history:
            if i != aid or closed:
                continue
            if kind == "ack" or (a is not None and a["status"] == "resolved"):
                closed = True
            elif a is not None and a["level"] == "critical" and first_critical is None:
                first_critical = ts
        if not closed and first_critical is not None and first_critical + AFTER <= now:
            want.add(aid)
    assert got == want


def test_the_escalator_skips_a_malformed_alert_and_applies_the_next() -> None:
    import orjson  # noqa: PLC0415

    from agents.delivery.escalate import _apply  # noqa: PLC0415
    from agents.delivery.notify import Route  # noqa: PLC0415
    from schemas import Rejection  # noqa: PLC0415

    t = EscalationTracker(AFTER)
    route = Route("critical", zones=frozenset({"za", "zb"}))

    def full(aid: str) -> dict[str, Any]:
        return alert(aid, "critical") | {"zone_id": aid.split(":", maxsplit=1)[0],
                                         "ts": "2026-02-16T13:00:00.000Z"}

    values = [orjson.dumps(full("za:1")),
              b"not json",
              orjson.dumps({"alert_id": "zb:bad", "level": "critical"}),  # no status, ts
              orjson.dumps(full("zb:2") | {"zone_id": ["za"]}),  # unhashable zone
              orjson.dumps(full("zb:3") | {"status": 5}),
              orjson.dumps(full("zb:1"))]
    got = [_apply(t, route, "alerts", "alerts", "acks", b"k", v, 1_000) for v in values]
    assert [type(g).__name__ for g in got] == [
        "NoneType", "Rejection", "Rejection", "Rejection", "Rejection", "NoneType"]
    assert t.pending_ids() == ["za:1", "zb:1"]
    bad_ack = _apply(t, route, "acks", "alerts", "acks", b"k", b'{"alert_id": 1}', 2_000)
    assert isinstance(bad_ack, Rejection)
    assert _apply(t, route, "escalations", "alerts", "acks", None, b"{}", 2_000) is not None
    assert t.pending_ids() == ["za:1", "zb:1"]
