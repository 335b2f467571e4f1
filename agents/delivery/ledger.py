"""A channel's books (agents/delivery/channels.py): which alerts it has taken
(:class:`Episodes`, the dedup memory per episode) and which offsets it may commit
(:class:`OffsetBook`, the lowest offset a partition still holds). Pure bookkeeping: no Kafka,
no sending.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

__all__ = ["TP", "Episodes", "OffsetBook"]

TP = Any  # a partition: aiokafka's TopicPartition, or any hashable in tests


class Episodes:
    """The dedup memory of one channel: the keys taken per open episode, and per recently
    resolved one (a replay may publish a closed episode again). Bounded: at most
    ``open_cap`` open and ``closed_cap`` closed episodes, the oldest forgotten first."""

    def __init__(self, open_cap: int = 10_000, closed_cap: int = 10_000) -> None:
        self.open_cap, self.closed_cap = open_cap, closed_cap
        self._open: OrderedDict[str, set[str]] = OrderedDict()
        self._closed: OrderedDict[str, set[str]] = OrderedDict()
        self.evicted = 0

    def take(self, alert_id: str, key: str, *, resolved: bool) -> bool:
        """True for an alert not taken before (now remembered), False for a repeat."""
        if alert_id in self._closed:
            keys = self._closed[alert_id]
            if key in keys:
                return False
            keys.add(key)
            return True
        if alert_id not in self._open:
            self._open[alert_id] = set()
        keys = self._open[alert_id]
        if key in keys:
            return False
        keys.add(key)
        self._open.move_to_end(alert_id)
        if resolved:
            self._closed[alert_id] = self._open.pop(alert_id)
            while len(self._closed) > self.closed_cap:
                self._closed.popitem(last=False)
        while len(self._open) > self.open_cap:
            self._open.popitem(last=False)
            self.evicted += 1
        return True

    def seen(self, alert_id: str, key: str) -> bool:
        """Taken before (delivered or dead-lettered)."""
        keys = self._closed.get(alert_id)
        if keys is None:
            keys = self._open.get(alert_id)
        return keys is not None and key in keys

    def note(self, alert_id: str, *, resolved: bool) -> None:
        """An alert of the episode was read: the episode is open, or closed by a
        resolution (its keys count as taken only once :meth:`take` is called)."""
        if alert_id in self._closed:
            return
        if not resolved:
            if alert_id not in self._open:
                self._open[alert_id] = set()
                while len(self._open) > self.open_cap:
                    self._open.popitem(last=False)
                    self.evicted += 1
            return
        self._closed[alert_id] = self._open.pop(alert_id, set())
        while len(self._closed) > self.closed_cap:
            self._closed.popitem(last=False)

    def is_open(self, alert_id: str) -> bool:
        return alert_id in self._open

    def __len__(self) -> int:
        return sum(map(len, self._open.values())) + sum(map(len, self._closed.values()))

    @property
    def episodes(self) -> int:
        return len(self._open) + len(self._closed)


class OffsetBook:
    """Per partition: the offsets still held and the next one to read. The offset to commit
    is the lowest held one, or the next one when nothing is held."""

    def __init__(self) -> None:
        self._held: dict[TP, set[int]] = {}
        self._next: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}

    def take(self, tp: TP, offset: int) -> None:
        self._held.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def skip(self, tp: TP, offset: int) -> None:
        """A record finished as soon as it was read."""
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def untake(self, tp: TP, offset: int) -> None:
        """A record taken but handed back (stopped before it was queued): it and all after
        it are to be read again."""
        held = self._held.get(tp)
        if held is not None:
            held.discard(offset)
        if tp in self._next:
            self._next[tp] = min(self._next[tp], offset)

    def finish(self, tp: TP, offset: int) -> None:
        held = self._held.get(tp)
        if held is not None:
            held.discard(offset)

    def committable(self, tps: Any = None) -> dict[TP, int]:
        """Offsets that moved since the last :meth:`committed` (of ``tps``, or all)."""
        out = {}
        for tp, nxt in self._next.items():
            if tps is not None and tp not in tps:
                continue
            held = self._held.get(tp)
            at = min(held) if held else nxt
            if self._committed.get(tp) != at:
                out[tp] = at
        return out

    def committed(self, offsets: Mapping[TP, int]) -> None:
        self._committed.update(offsets)

    def drop(self, tps: Any) -> None:
        for tp in tps:
            self._held.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
