"""A robust event-time clock for input without an arrival time (offline replay of files).

Live, every reading is judged against its *arrival*: the broker timestamp of its record. A
recorded file has no arrival, so replay needs a clock that no single sensor can pull. Each of
the last ``depth`` distinct sensors heard votes with the time of its latest reading; the
clock is the ``k``-th latest vote, ``k = max(2, n / 5)`` of ``n`` voters. One camera whose
clock reset to 2200, or runs 15 s fast, is the latest vote and is outvoted (so are up to a
fifth of the sensors together); one odd reading counts only until its sensor's next one; a
stopped sensor drops out as others are heard. The clock stays close to the newest honest
reading, and once three sensors were heard it never goes backwards.

Before any sensor was heard the clock is the start of the batch about to be read (a seed,
:meth:`RobustClock.opinion`). With one sensor, that sensor is the clock: there is nobody to
outvote it; while fewer than three were heard the clock may still go back (the first one
heard may be the one that runs fast).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable


def kth_latest(votes: Iterable[int]) -> int:
    """The ``max(2, n/5)``-th largest of ``n`` votes (the only one if there is one)."""
    s = sorted(votes, reverse=True)
    k = max(2, math.ceil(len(s) / 5))
    return s[min(k, len(s)) - 1]


class RobustClock:
    """The k-th latest of the distinct recent sensors' latest reading times (epoch ms)."""

    def __init__(self, depth: int = 255) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.depth = depth
        self._votes: OrderedDict[str, int] = OrderedDict()  # sensor -> latest ts, LRU order
        self._now: int | None = None
        self._seed: int | None = None

    def __len__(self) -> int:
        return len(self._votes)

    def now(self) -> int | None:
        """The clock (epoch ms); before any sensor was heard, the seed (or None)."""
        return self._now if self._now is not None else self._seed

    def observe(self, readings: Iterable[tuple[str, int]]) -> int | None:
        """Take ``(sensor_id, ts_ms)`` of accepted readings; return the clock after them."""
        votes = self._votes
        for sensor, ts in readings:
            votes.pop(sensor, None)
            votes[sensor] = ts
        while len(votes) > self.depth:
            votes.popitem(last=False)
        if votes:
            m = kth_latest(votes.values())
            # While fewer than three sensors were heard the clock may go back (the first one
            # heard may be the one that runs fast); from then on it never does.
            if len(votes) >= 3 and self._now is not None:
                m = max(self._now, m)
            self._now = m
        return self._now

    def seed(self, ms: int) -> None:
        """The opinion of the batch about to be read (:meth:`opinion`): the clock until a
        sensor is heard."""
        self._seed = ms

    @staticmethod
    def opinion(readings: Iterable[tuple[str, int]], first: int = 32) -> int | None:
        """An opinion of when a batch starts: the median of its first ``first`` readings (a
        file that starts with a bad clock is judged like the rest)."""
        head = sorted(ts for _, (_, ts) in zip(range(first), readings, strict=False))
        return head[(len(head) - 1) // 2] if head else None
