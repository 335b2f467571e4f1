"""The bounded priority queue of one notify channel (:class:`ChannelQueue`) and its items
(:class:`Job`): ready alerts by (level, age), those waiting for a retry by time. Split from
:mod:`agents.delivery.channels`, which runs it."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streams import level_rank

TP = Any  # a partition: aiokafka's TopicPartition, or any hashable in tests


@dataclass(eq=False)
class Job:
    """One alert on its way to one channel."""

    alert: dict[str, Any]
    key: str
    alert_id: str
    rank: int
    tp: TP
    offset: int
    kafka_key: bytes | None
    order: int
    attempts: int = 0
    orphan: bool = False  # its partition was revoked while it was in flight


def priority_rank(alert: Mapping[str, Any]) -> int:
    """Its level; a resolution ranks as the level it ends (it stays behind the episode's
    own alerts, ahead of lesser episodes)."""
    if alert.get("status") == "resolved":
        return level_rank(str(alert.get("previous_level")))
    return level_rank(str(alert.get("level")))


class ChannelQueue:
    """The alerts one channel holds, at most ``bound``: ready ones by (level, age), and
    those waiting for their retry time."""

    def __init__(self, bound: int, clock: Callable[[], float] = time.monotonic) -> None:
        if bound < 1:
            raise ValueError("bound must be >= 1")
        self.bound = bound
        self.clock = clock
        self._ready: list[tuple[int, int, Job]] = []
        self._waiting: list[tuple[float, int, Job]] = []
        self._held = 0
        self._cond = asyncio.Condition()

    @property
    def held(self) -> int:
        """Queued, waiting for a retry, or taken and not yet :meth:`done`."""
        return self._held

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def free(self) -> int:
        return max(0, self.bound - self._held)

    def full(self) -> bool:
        return self._held >= self.bound

    async def put(self, job: Job) -> None:
        """Add a fresh job; waits while the queue is full (back-pressure)."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._held < self.bound)
            self._held += 1
            heapq.heappush(self._ready, (-job.rank, job.order, job))
            self._cond.notify_all()

    async def wait_for_room(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self._held < self.bound)

    async def get(self) -> Job:
        """The ready job of the highest level, oldest first; waits for one."""
        async with self._cond:
            while True:
                now = self.clock()
                while self._waiting and self._waiting[0][0] <= now:
                    _, _, job = heapq.heappop(self._waiting)
                    heapq.heappush(self._ready, (-job.rank, job.order, job))
                if self._ready:
                    return heapq.heappop(self._ready)[2]
                if not self._waiting:
                    await self._cond.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, self._waiting[0][0] - now)):
                        await self._cond.wait()

    async def retry_at(self, job: Job, at: float) -> None:
        """Hold a taken job until ``at`` (monotonic seconds); it stays counted."""
        async with self._cond:
            heapq.heappush(self._waiting, (at, job.order, job))
            self._cond.notify_all()

    async def wake(self) -> None:
        """Every waiting job is ready now."""
        async with self._cond:
            if self._waiting:
                now = self.clock()
                self._waiting = [(now, order, job) for _, order, job in self._waiting]
                heapq.heapify(self._waiting)
                self._cond.notify_all()

    async def drop(self, which: Callable[[Job], bool]) -> list[Job]:
        """Remove the queued jobs (ready or waiting, not taken) ``which`` picks; their
        places are free. Returns them."""
        async with self._cond:
            gone = [job for _, _, job in (*self._ready, *self._waiting) if which(job)]
            if gone:
                self._ready = [e for e in self._ready if not which(e[2])]
                self._waiting = [e for e in self._waiting if not which(e[2])]
                heapq.heapify(self._ready)
                heapq.heapify(self._waiting)
                self._held -= len(gone)
                self._cond.notify_all()
            return gone

    async def done(self, job: Job) -> None:
        """A taken job is finished: its place is free."""
        async with self._cond:
            self._held -= 1
            self._cond.notify_all()
