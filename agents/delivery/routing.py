"""Which records of the alerts topic one channel hears (:class:`Receipts`), episode by episode.

A channel has a :class:`~agents.delivery.notify.Route`: a minimum level and optionally some
zones. Record by record the level alone is not enough: an episode that reached the channel's
level and then stepped down below it must still be closed on that channel. So, per channel:

- a record at or above the minimum level is sent, and the episode counts as *received*;
- the first record below the minimum level after one that was sent (the episode *stepped
  down below* the level) is sent once, marked: ``stepped_below`` (the minimum level) in the
  payload and "ลดระดับต่ำกว่าระดับ… / Stepped down below <level>" first in its message. The
  records after it, still below, are not sent; if the episode rises to the level again it is
  sent again, and a later step down is marked again;
- the resolution of a received episode is sent, whatever level it ended at (and, as before,
  the resolution of an episode that ended at or above the level, received here or not);
- anything else is not for this channel.

The decisions are a function of the alerts topic alone (its records in partition order; an
episode is keyed by zone, so it lives on one partition), so after a notifier restart the
state is rebuilt by reading the partition again up to the committed offset without sending
(:meth:`agents.delivery.channels.ChannelRunner.catch_up`). Records repeated by a worker replay
(a ``seq`` not above the newest one applied) change no state: they get the decision of the
record they repeat and the channel's dedup skips them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams import level_rank
from streams.messages import LEVEL_TH

from .notify import Route

__all__ = ["Receipts", "stepped_down"]


@dataclass(slots=True)
class _Heard:
    above: bool  # the channel's last word on the episode was at or above its minimum level
    seq: int  # the newest seq applied (0: the records carry none)


def _seq(alert: Mapping[str, Any]) -> int:
    seq = alert.get("seq")
    if isinstance(seq, int | float) and not isinstance(seq, bool) and seq >= 1:
        return int(seq)
    return 0


def stepped_down(alert: Mapping[str, Any], level: str) -> dict[str, Any]:
    """The record as a channel hears it when the episode stepped down below ``level``."""
    msg = alert.get("message") or {}
    out = dict(alert)
    out["stepped_below"] = level
    out["message"] = {
        "th": f"ลดระดับต่ำกว่าระดับ{LEVEL_TH.get(level, level)}\n{msg.get('th', '')}".strip(),
        "en": f"Stepped down below {level}\n{msg.get('en', '')}".strip(),
    }
    return out


class Receipts:
    """The episodes one channel received. Bounded: ``cap`` open episodes (the oldest are
    forgotten first; their resolutions still follow the level rule) and ``cap`` resolved
    ones (to answer repeats of their resolution alike)."""

    def __init__(self, route: Route, cap: int = 20_000) -> None:
        self.route = route
        self.cap = cap
        self._open: OrderedDict[str, _Heard] = OrderedDict()
        self._closed: OrderedDict[str, bool] = OrderedDict()  # alert_id -> resolution sent

    def received(self, alert_id: str) -> bool:
        """The channel received a record of this open episode."""
        return alert_id in self._open

    def decide(self, alert: Mapping[str, Any]) -> dict[str, Any] | None:
        """The record to send to the channel (``alert`` itself, or marked as a step down),
        or None: not for this channel."""
        route = self.route
        if route.zones is not None and alert.get("zone_id") not in route.zones:
            return None
        alert_id = str(alert.get("alert_id"))
        minimum = level_rank(route.min_level)
        seq = _seq(alert)
        if alert.get("status") == "resolved":
            if alert_id in self._closed:
                return dict(alert) if self._closed[alert_id] else None
            heard = self._open.pop(alert_id, None)
            send = heard is not None or level_rank(str(alert.get("previous_level"))) >= minimum
            self._closed[alert_id] = send
            while len(self._closed) > self.cap:
                self._closed.popitem(last=False)
            return dict(alert) if send else None
        if alert_id in self._closed:  # a repeat of a closed episode's record
            return dict(alert) if level_rank(str(alert.get("level"))) >= minimum else None
        at_level = level_rank(str(alert.get("level"))) >= minimum
        heard = self._open.get(alert_id)
        if heard is not None and seq and heard.seq and seq <= heard.seq:
            return dict(alert) if at_level else None  # a repeat: no state changes
        if at_level:
            if heard is None:
                heard = self._open[alert_id] = _Heard(True, seq)
                while len(self._open) > self.cap:
                    self._open.popitem(last=False)
            heard.above, heard.seq = True, max(heard.seq, seq)
            self._open.move_to_end(alert_id)
            return dict(alert)
        if heard is None:
            return None
        heard.seq = max(heard.seq, seq)
        if not heard.above:
            return None
        heard.above = False
        return stepped_down(alert, route.min_level)
