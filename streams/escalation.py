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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas import format_ts


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
