"""Escalation: a critical alert nobody acknowledged in time goes to a second channel.

Pure state machine (no Kafka): the escalation notifier (``agents/delivery/escalate.py``) feeds it
the alerts topic, the acknowledgements topic and its own log of escalations, and asks it what is
due. Times here are *processing* time (epoch ms of the Kafka record and of the wall clock):
the question is how long operators have had the alert in front of them, not when the crowd
formed.

An alert episode (one ``alert_id``) becomes *pending* when an alert of it at level
``critical`` is seen, and is due ``after_ms`` later unless, before that:
  - an operator acknowledges it (any acknowledgement of the ``alert_id``), or
  - the episode is resolved (the zone is back to normal).
A de-escalation from critical to high does not cancel it: the critical alert still stands
unacknowledged. Each episode escalates at most once; ``on_escalated`` records that, also
when replaying the escalation log after a restart.

An episode whose escalation was delivered and which is then resolved or acknowledged gets a
*stand-down* on the escalation channel, once (:class:`StandDowns`, :func:`stand_down_alert`:
"ยกเลิกการยกระดับ... / STAND DOWN: the escalated critical alert is resolved", or "...was
acknowledged by somchai at 19:40 ICT, 15 Feb 2026"), so the duty manager knows it is handled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas import format_ts

from .messages import english_datetime, thai_datetime


@dataclass(slots=True)
class Pending:
    alert: Mapping[str, Any]  # the newest alert of the episode
    since_ms: int  # when its first critical alert was seen
    due_ms: int


class EscalationTracker:
    def __init__(self, after_ms: int, *, forget_ms: int = 7 * 24 * 3600 * 1000) -> None:
        if after_ms < 0:
            raise ValueError("after_ms must be >= 0")
        self.after_ms = after_ms
        self.forget_ms = forget_ms
        self._pending: dict[str, Pending] = {}
        self._closed: dict[str, int] = {}  # alert_id -> when it was acked/resolved/escalated

    def on_alert(self, alert: Mapping[str, Any], seen_ms: int) -> None:
        alert_id = str(alert["alert_id"])
        if alert_id in self._closed:
            return
        if alert.get("status") == "resolved":
            self._pending.pop(alert_id, None)
            self._closed[alert_id] = seen_ms
            return
        pending = self._pending.get(alert_id)
        if pending is not None:
            pending.alert = alert
        elif alert.get("level") == "critical":
            self._pending[alert_id] = Pending(alert, seen_ms, seen_ms + self.after_ms)

    def on_ack(self, alert_id: str, seen_ms: int) -> None:
        self._pending.pop(alert_id, None)
        self._closed[alert_id] = seen_ms

    def on_escalated(self, alert_id: str, seen_ms: int) -> None:
        self.on_ack(alert_id, seen_ms)

    def due(self, now_ms: int) -> list[Pending]:
        """Episodes whose time is up, oldest first; they are no longer pending."""
        out = sorted((p for p in self._pending.values() if p.due_ms <= now_ms),
                     key=lambda p: (p.due_ms, str(p.alert["alert_id"])))
        for p in out:
            del self._pending[str(p.alert["alert_id"])]
        self._forget(now_ms)
        return out

    def next_due_ms(self) -> int | None:
        return min((p.due_ms for p in self._pending.values()), default=None)

    def pending_ids(self) -> list[str]:
        return sorted(self._pending)

    def _forget(self, now_ms: int) -> None:
        old = [k for k, t in self._closed.items() if now_ms - t > self.forget_ms]
        for k in old:
            del self._closed[k]


def escalation_alert(p: Pending, now_ms: int) -> dict[str, Any]:
    """What the second channel receives: the newest alert of the episode, marked as an
    escalation, with the message saying for how long nobody acknowledged it."""
    minutes = max(round((now_ms - p.since_ms) / 60_000), 1)
    msg = p.alert.get("message") or {}
    out = dict(p.alert)
    out["escalation"] = {"unacknowledged_since": format_ts(p.since_ms),
                         "unacknowledged_s": round((now_ms - p.since_ms) / 1000)}
    out["message"] = {
        "th": f"ยกระดับแจ้งเตือน: ยังไม่มีผู้รับทราบการแจ้งเตือนระดับวิกฤตนานกว่า {minutes} นาที\n"
              f"{msg.get('th', '')}".strip(),
        "en": f"ESCALATION: critical alert not acknowledged for {minutes} min\n"
              f"{msg.get('en', '')}".strip(),
    }
    return out


@dataclass(slots=True)
class StandDown:
    alert: Mapping[str, Any]  # the newest alert of the episode (its resolution, if resolved)
    reason: str  # "resolved" or "acknowledged"
    by: str | None  # who acknowledged it
    at_ms: int  # when it was resolved or acknowledged (processing time)


class StandDowns:
    """An escalated episode (its escalation delivered) that is then resolved or acknowledged:
    the escalation channel hears a stand-down once. Fed the same three topics as
    :class:`EscalationTracker` (an escalation log record says delivered, or stood down), so a
    restart that reads them back neither repeats a stand-down nor misses one."""

    def __init__(self, *, forget_ms: int = 7 * 24 * 3600 * 1000) -> None:
        self.forget_ms = forget_ms
        self._latest: dict[str, Mapping[str, Any]] = {}  # episodes seen critical
        self._closed: dict[str, StandDown] = {}  # resolved or acknowledged, first word
        self._escalated: set[str] = set()
        self._done: dict[str, int] = {}  # alert_id -> when stood down, or handed out
        self._seen: dict[str, int] = {}  # alert_id -> last record seen (for forgetting)

    def on_alert(self, alert: Mapping[str, Any], seen_ms: int) -> None:
        alert_id = str(alert["alert_id"])
        if alert_id not in self._latest and alert.get("level") != "critical":
            return
        self._latest[alert_id] = alert
        self._seen[alert_id] = seen_ms
        if alert.get("status") == "resolved":
            self._closed.setdefault(alert_id, StandDown(alert, "resolved", None, seen_ms))

    def on_ack(self, alert_id: str, operator: str, seen_ms: int) -> None:
        if alert_id in self._latest:
            self._seen[alert_id] = seen_ms
            self._closed.setdefault(alert_id, StandDown(self._latest[alert_id],
                                                        "acknowledged", operator, seen_ms))

    def on_escalated(self, alert_id: str) -> None:
        """The episode's escalation was delivered to the channel."""
        self._escalated.add(alert_id)

    def on_stood_down(self, alert_id: str, seen_ms: int) -> None:
        """Its stand-down was settled (delivered or dead-lettered): never again."""
        self._done[alert_id] = seen_ms

    def due(self, now_ms: int) -> list[StandDown]:
        """Escalated episodes now closed whose stand-down was not handed out yet (each is
        handed out once), oldest first."""
        out = sorted((c for k, c in self._closed.items()
                      if k in self._escalated and k not in self._done),
                     key=lambda c: (c.at_ms, str(c.alert["alert_id"])))
        for c in out:
            self._done[str(c.alert["alert_id"])] = now_ms
        self._forget(now_ms)
        return out

    def _forget(self, now_ms: int) -> None:
        old = [k for k, t in self._seen.items() if now_ms - t > self.forget_ms]
        for k in old:
            for d in (self._latest, self._closed, self._seen):
                d.pop(k, None)
            self._escalated.discard(k)
        for k in [k for k, t in self._done.items() if now_ms - t > self.forget_ms]:
            del self._done[k]


def stand_down_alert(s: StandDown) -> dict[str, Any]:
    """What the escalation channel receives once an escalated episode is resolved or
    acknowledged: its newest alert, marked ``stand_down`` (no longer ``escalation``), with the
    message saying so (a drill's keeps ``exercise``: the channels mark it)."""
    msg = s.alert.get("message") or {}
    out = {k: v for k, v in s.alert.items() if k != "escalation"}
    out["stand_down"] = {"reason": s.reason, "by": s.by, "at": format_ts(s.at_ms)}
    if s.reason == "resolved":
        th = "ยกเลิกการยกระดับ: เหตุการณ์ที่ยกระดับแจ้งเตือนกลับสู่ภาวะปกติแล้ว"
        en = "STAND DOWN: the escalated critical alert is resolved"
    else:
        th = (f"ยกเลิกการยกระดับ: {s.by} รับทราบการแจ้งเตือนที่ยกระดับแล้ว "
              f"{thai_datetime(s.at_ms)}")
        en = (f"STAND DOWN: the escalated critical alert was acknowledged by {s.by} "
              f"at {english_datetime(s.at_ms)}")
    out["message"] = {"th": f"{th}\n{msg.get('th', '')}".strip(),
                      "en": f"{en}\n{msg.get('en', '')}".strip()}
    return out
