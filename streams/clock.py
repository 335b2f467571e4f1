"""A robust event-time clock for input without an arrival time (offline replay of files).

Live, every reading is judged against its *arrival*: the broker timestamp of its record. A
recorded file has no arrival, so replay needs a clock that no single sensor can pull: the
median (low) over the newest reading of each of the last ``depth`` distinct sensors heard.
One camera whose clock reset to 2200, or runs 15 s fast, is one vote among many, and a
stopped sensor drops out as others are heard. The clock never goes backwards.

A clock with fewer than ``quorum`` sensors has no opinion (``None``): the pipeline then
takes the median of the batch it is about to process as the first opinion.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class RobustClock:
    """Median over distinct recent sensors of their newest reading time (epoch ms)."""

    def __init__(self, depth: int = 255, quorum: int = 3) -> None:
        if depth < 1 or quorum < 1:
            raise ValueError("depth and quorum must be >= 1")
        self.depth = depth
        self.quorum = quorum
        self._newest: OrderedDict[str, int] = OrderedDict()  # sensor -> newest ts, LRU order
        self._now: int | None = None

    def __len__(self) -> int:
        return len(self._newest)

    def now(self) -> int | None:
        """The clock (epoch ms), or None before ``quorum`` sensors were heard."""
        return self._now

    def observe(self, readings: Iterable[tuple[str, int]]) -> int | None:
        """Take ``(sensor_id, ts_ms)`` of accepted readings; return the clock after them."""
        newest = self._newest
        for sensor, ts in readings:
            old = newest.pop(sensor, None)
            newest[sensor] = ts if old is None or ts > old else old
        while len(newest) > self.depth:
            newest.popitem(last=False)
        if len(newest) >= self.quorum:
            m = median_low(newest.values())
            self._now = m if self._now is None or m > self._now else self._now
        return self._now

    @staticmethod
    def opinion(readings: Iterable[tuple[str, int]]) -> int | None:
        """A first opinion from one batch: the median over its sensors of their newest ts."""
        newest: dict[str, int] = {}
        for sensor, ts in readings:
            if ts > newest.get(sensor, ts - 1):
                newest[sensor] = ts
        return median_low(newest.values()) if newest else None


def median_low(values: Iterable[int]) -> int:
    s = sorted(values)
    return s[(len(s) - 1) // 2]
