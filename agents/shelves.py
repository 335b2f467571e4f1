"""The shelves topic's records, as every reader parses them: the notifiers (which hold a
shelved zone's notifications back, agents/delivery/shelving.py) and the dashboard (which shows
the shelf on the zone's row and map marker, agents/dashboard/dashboard.py).

A record (keyed by zone_id; the newest record of a zone replaces the earlier one)::

    {"zone_id": "night-bazaar", "action": "shelve", "by": "somchai",
     "at": "2026-02-16T13:00:00.000Z", "until": "2026-02-16T13:30:00.000Z",
     "reason": "stage rehearsal, crowd expected"}

``action`` is ``shelve`` or ``unshelve``. A shelf ends by itself at ``until`` (no record is
written then) and lasts at most MAX_SHELF_S, whoever wrote the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from schemas import format_ts, parse_ts

MAX_SHELF_S = 4 * 3600
LOOKBACK_S = MAX_SHELF_S + 60
"""How far back a reader starts on the shelves topic (a delete-policy topic kept 90 days for
the audit): a record older than the longest shelf cannot hold now (60 s for clock skew)."""


@dataclass(frozen=True, slots=True)
class Shelf:
    zone_id: str
    by: str
    at_ms: int
    until_ms: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"zone_id": self.zone_id, "by": self.by, "at": format_ts(self.at_ms),
                "until": format_ts(self.until_ms), "reason": self.reason}


def parse_shelf(value: bytes | None) -> tuple[str, Shelf | None] | str:
    """One record of the shelves topic: ``(zone_id, shelf)`` (shelf None: an unshelve), or
    the reason it is unusable (a string)."""
    try:
        rec = orjson.loads(value or b"")
        zone = rec["zone_id"]
        action = rec["action"]
        if not isinstance(zone, str) or not zone or action not in ("shelve", "unshelve"):
            raise ValueError("zone_id or action")
        if action == "unshelve":
            return zone, None
        shelf = Shelf(zone, str(rec.get("by", "")), _when(rec["at"], "/at"),
                      _when(rec["until"], "/until"), str(rec.get("reason", "")))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return f"not a shelves record: {exc}"
    # A record cannot shelve for longer than the bound, whoever wrote it.
    if shelf.until_ms - shelf.at_ms > MAX_SHELF_S * 1000:
        shelf = Shelf(shelf.zone_id, shelf.by, shelf.at_ms,
                      shelf.at_ms + MAX_SHELF_S * 1000, shelf.reason)
    return zone, shelf


def _at_of(value: bytes | None) -> int | None:
    """An unshelve record's ``at`` (None when it has none readable)."""
    try:
        return _when(orjson.loads(value or b"")["at"], "/at")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _when(value: object, where: str) -> int:
    """``parse_ts``, whose error for a bad time (private to schemas) becomes a ValueError."""
    try:
        return parse_ts(value, where)
    except Exception as exc:
        raise ValueError(str(exc)) from None


HISTORY = 32
"""Shelves remembered per zone for :meth:`Shelves.held_at` (the newest ones)."""


class Shelves:
    """The newest shelves record per zone; :meth:`active` says whether one holds now, and
    :meth:`held_at` whether one held at a past time (a restarted notifier rebuilding what it
    held back, agents/delivery/channels.py)."""

    def __init__(self) -> None:
        self._by_zone: dict[str, Shelf | None] = {}
        self._held: dict[str, list[tuple[int, int]]] = {}  # zone -> [(from_ms, to_ms)]
        self.bad = 0

    def apply(self, value: bytes | None) -> str | None:
        """Take one record of the shelves topic; the reason it is unusable, or None."""
        parsed = parse_shelf(value)
        if isinstance(parsed, str):
            self.bad += 1
            return parsed
        at_ms = parsed[1].at_ms if parsed[1] is not None else _at_of(value)
        self.put(*parsed, at_ms=at_ms)
        return None

    def put(self, zone_id: str, shelf: Shelf | None, *, at_ms: int | None = None) -> None:
        """The newest record of ``zone_id``: a shelf, or None (unshelved), written at
        ``at_ms`` (it ends the zone's earlier shelf then)."""
        self._by_zone[zone_id] = shelf
        held = self._held.setdefault(zone_id, [])
        if held and at_ms is not None:
            start, end = held[-1]
            held[-1] = (start, max(start, min(end, at_ms)))
        if shelf is not None:
            held.append((shelf.at_ms, shelf.until_ms))
            del held[:-HISTORY]

    def held_at(self, zone_id: str, ts_ms: int) -> bool:
        """A shelf of the zone held at ``ts_ms`` (epoch ms)."""
        return any(start <= ts_ms < end for start, end in self._held.get(zone_id, ()))

    def active(self, zone_id: str, now_s: float) -> Shelf | None:
        shelf = self._by_zone.get(zone_id)
        if shelf is None or shelf.until_ms <= now_s * 1000:
            return None
        return shelf

    def listing(self, now_s: float) -> list[Shelf]:
        """The shelves that hold now, by zone."""
        return [s for z in sorted(self._by_zone) if (s := self.active(z, now_s)) is not None]
