"""The shelves topic's records, as every reader parses them: the notifiers (which hold a
shelved zone's notifications back, agents/delivery/shelving.py) and the dashboard (which shows
the shelf on the zone's row and map marker, agents/dashboard/board.py).

A record (keyed by zone_id; the newest record of a zone replaces the earlier one)::

    {"zone_id": "night-bazaar", "action": "shelve", "by": "somchai",
     "at": "2026-02-16T13:00:00.000Z", "until": "2026-02-16T13:30:00.000Z",
     "reason": "stage rehearsal, crowd expected"}

``action`` is ``shelve`` or ``unshelve``. A shelf ends by itself at ``until`` (no record is
written then) and lasts at most MAX_SHELF_S, whoever wrote the record.

A record is judged by its Kafka timestamp, not by the ``at`` its writer put in it (issue 15: a
record with ``at`` years ahead would otherwise hold a silent shelf from then on): a shelve
record whose ``at`` is more than SKEW_S ahead of its timestamp is refused, and so is one whose
timestamp is more than SKEW_S ahead of the reader's clock (the topic is CreateTime, so the
writer sets it); a shelf starts no later than its timestamp and ends no later than its
timestamp + MAX_SHELF_S, whatever ``until`` says. A record read without a timestamp is judged
as written when it is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from schemas import format_ts, parse_ts

MAX_SHELF_S = 4 * 3600
SKEW_S = 60
"""Clock skew allowed between a record's ``at``, its Kafka timestamp and the reader's clock."""
LOOKBACK_S = MAX_SHELF_S + SKEW_S
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


def parse_shelf(value: bytes | None, *, ts_ms: int | None,
                now_ms: int) -> tuple[str, Shelf | None] | str:
    """One record of the shelves topic, written at ``ts_ms`` (its Kafka timestamp; None or
    negative when unknown: judged as written at ``now_ms``, the reader's clock): ``(zone_id,
    shelf)`` (shelf None: an unshelve), or the reason it is unusable (a string)."""
    written_ms = now_ms if ts_ms is None or ts_ms < 0 else ts_ms
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
    skew_ms = SKEW_S * 1000
    if written_ms > now_ms + skew_ms:
        return (f"a shelves record stamped {format_ts(written_ms)}, ahead of this reader's "
                f"clock ({format_ts(now_ms)}) by more than {SKEW_S} s")
    if shelf.at_ms > written_ms + skew_ms:
        return (f"/at {format_ts(shelf.at_ms)} is ahead of the record's timestamp "
                f"{format_ts(written_ms)} by more than {SKEW_S} s")
    # A shelf starts when its record was written at the latest, and cannot last longer than
    # the bound from then, whoever wrote it and whatever its until says.
    at_ms = min(shelf.at_ms, written_ms)
    until_ms = min(shelf.until_ms, at_ms + MAX_SHELF_S * 1000)
    if (at_ms, until_ms) != (shelf.at_ms, shelf.until_ms):
        shelf = Shelf(shelf.zone_id, shelf.by, at_ms, until_ms, shelf.reason)
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

    def apply(self, value: bytes | None, *, ts_ms: int | None, now_s: float) -> str | None:
        """Take one record of the shelves topic, written at ``ts_ms`` (its Kafka timestamp)
        and read at ``now_s`` (:func:`parse_shelf`); the reason it is unusable, or None."""
        now_ms = int(now_s * 1000)
        parsed = parse_shelf(value, ts_ms=ts_ms, now_ms=now_ms)
        if isinstance(parsed, str):
            self.bad += 1
            return parsed
        if parsed[1] is not None:
            at_ms: int | None = parsed[1].at_ms
        else:  # an unshelve ends the earlier shelf when it was written at the latest
            written_ms = now_ms if ts_ms is None or ts_ms < 0 else ts_ms
            at_ms = _at_of(value)
            at_ms = written_ms if at_ms is None else min(at_ms, written_ms)
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
