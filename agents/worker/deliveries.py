"""The worker's pending deliveries (commit protocol step 2 and 3, agents/worker/worker.py):
the delivery futures of published outputs until the broker acknowledged them, sent again with
backoff when they fail, awaited before every snapshot and, past ``max_pending``, before the
next batch (back-pressure). Past its last attempt a delivery raises :class:`DeliveryFailed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from .publish import Sent

__all__ = ["Deliveries", "DeliveryFailed"]

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """An output was not acknowledged by the broker after every attempt."""


class Deliveries:
    """The delivery futures of published outputs not yet known to be acknowledged.

    ``resend`` sends a failed delivery's records again and returns their new futures.
    ``max_pending`` bounds the futures kept: :meth:`add` beyond it awaits them all first."""

    def __init__(
        self, resend: Callable[[Sent], Awaitable[list[Sent]]], *, max_pending: int = 4096,
        attempts: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 8.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._resend = resend
        self.max_pending = max_pending
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.pending: list[Sent] = []
        self.retries = 0  # deliveries sent again so far

    def __len__(self) -> int:
        return len(self.pending)

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt ``attempt`` (1, 2, ...): doubling, capped."""
        return float(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))

    async def add(self, sent: Iterable[Sent]) -> None:
        self.pending.extend(sent)
        if len(self.pending) > self.max_pending:
            await self.settle()

    async def settle(self) -> None:
        """Return once every pending delivery is acknowledged; retry failed ones with
        backoff; raise :class:`DeliveryFailed` if one still fails after ``attempts``."""
        todo, self.pending = self.pending, []
        attempt = 1
        while todo:
            results = await asyncio.gather(*(s.future for s in todo), return_exceptions=True)
            failed = [(s, r) for s, r in zip(todo, results, strict=True)
                      if isinstance(r, BaseException)]
            for _, r in failed:
                if isinstance(r, asyncio.CancelledError):
                    self.pending = [s for s, _ in failed] + self.pending
                    raise r
            if not failed:
                return
            first = failed[0]
            if attempt >= self.attempts:
                self.pending = [s for s, _ in failed] + self.pending
                raise DeliveryFailed(
                    f"{len(failed)} deliveries to {first[0].topic} failed {attempt} times; "
                    f"last error: {type(first[1]).__name__}: {first[1]}")
            delay = self.delay(attempt)
            log.warning("%d deliveries to %s failed (%s: %s); sending them again in %.1f s "
                        "(attempt %d of %d)", len(failed), first[0].topic,
                        type(first[1]).__name__, first[1], delay, attempt + 1, self.attempts)
            await self.sleep(delay)
            todo = []
            for s, _ in failed:
                todo += await self._resend(s)
                self.retries += 1
            attempt += 1
