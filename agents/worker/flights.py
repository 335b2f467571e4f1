"""Routing fetches without waiting for each one's acknowledgement, yet committing in order.

The router agent (agents/worker/worker.py ``Worker.route``) hands each fetch of the sensor
and reports topics to the producer and goes on with the next fetch at once; a fetch is
*acknowledged to faust* (so its input offsets may be committed) only once the broker has
acknowledged every record routed from it, and only after every earlier fetch was. Awaiting
each fetch's acknowledgement before reading the next one (one produce round trip per fetch,
over all input partitions in turn) halved the worker's throughput.

Order on the by-zone topic is what the lanes (streams/lanes.py) rely on: within one by-zone
partition, the records of fetch *k* come before those of fetch *k + 1*. The producer keeps it
(idempotent, in order per partition). When a delivery fails after the producer's own retries,
:class:`RouteFlights` stops sending, lets every delivery in flight settle and then, per by-zone
partition:

- if nothing was delivered after the first failed batch, it sends the failed batches again, in
  their original order, with backoff, up to ``attempts`` times (a repeated record is harmless:
  stage 2 drops a repeated reading by ``event_id``, a repeated report by ``report_id``);
- if a later batch was delivered after an earlier one failed, resending could only put the
  earlier records behind the later ones, so it gives up: :class:`RouteError`, nothing past the
  failure is acknowledged, and the worker stops loudly (its restart routes again from the last
  committed offsets, in order).

Usage (what ``Worker.route`` does)::

    flights = RouteFlights(send, resend, ack, on_fail=...)
    drain = asyncio.create_task(flights.drain())
    async for event in stream.noack().events():
        await flights.submit(event, sources_of(event))
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from streams.records import Consumed
from streams.route import RoutedRecord

from .publish import RoutedSent
from .router import RouteError

log = logging.getLogger(__name__)

Send = Callable[[Sequence[Consumed]], Awaitable[list[RoutedSent]]]
Resend = Callable[[int, Sequence[RoutedRecord]], Awaitable[list[RoutedSent]]]


@dataclass(slots=True)
class Flight:
    """One fetch handed to the producer: what to acknowledge, and its deliveries."""

    token: Any  # what ``ack`` is called with (faust: the event)
    sent: list[RoutedSent]


def _error(fut: asyncio.Future[Any]) -> BaseException | None:
    if fut.cancelled():
        return asyncio.CancelledError()
    return fut.exception()  # also marks it retrieved: no "never retrieved" warning


def _first_failed(sent: RoutedSent) -> int | None:
    """The index of the first record of ``sent`` whose delivery failed (None: none)."""
    return next((i for i, f in enumerate(sent.futures) if _error(f) is not None), None)


async def _settled(sent: Sequence[RoutedSent]) -> None:
    futures = [f for s in sent for f in s.futures]
    if futures:
        await asyncio.wait(futures)


class RouteFlights:
    """Fetches routed but not yet acknowledged, at most ``max_flights`` of them.

    ``send(messages)`` routes one fetch and hands it to the producer; ``resend(partition,
    records)`` sends records whose delivery failed again; ``ack(token)`` tells faust a fetch
    is done; ``delay(attempt)`` is the pause after failed attempt ``attempt``;
    ``on_fail(error)`` is called once when routing gives up (the worker stops loudly)."""

    def __init__(
        self, send: Send, resend: Resend, ack: Callable[[Any], Awaitable[Any]], *,
        on_fail: Callable[[RouteError], None], max_flights: int = 32, attempts: int = 5,
        delay: Callable[[int], float] = lambda attempt: 0.5 * 2 ** (attempt - 1),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_flights < 1 or attempts < 1:
            raise ValueError("max_flights and attempts must be at least 1")
        self._send = send
        self._resend = resend
        self._ack = ack
        self._on_fail = on_fail
        self.max_flights = max_flights
        self.attempts = attempts
        self._delay = delay
        self._sleep = sleep
        self.flights: deque[Flight] = deque()
        self.retries = 0  # records sent again so far
        self.failure: RouteError | None = None
        self._sending = asyncio.Lock()  # held while sending; recovery holds it too
        self._queued = asyncio.Event()  # a flight is waiting for the drainer
        self._room = asyncio.Event()  # fewer than max_flights in flight

    def __len__(self) -> int:
        return len(self.flights)

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def submit(self, token: Any, messages: Sequence[Consumed]) -> None:
        """Route one fetch and hand it to the producer; returns once it is sent, not
        acknowledged (waits first while ``max_flights`` fetches are in flight). Raises the
        :class:`RouteError` the drainer gave up with."""
        self._check()
        while len(self.flights) >= self.max_flights:
            self._room.clear()
            await self._room.wait()
            self._check()
        async with self._sending:
            self._check()
            self.flights.append(Flight(token, await self._send(messages)))
            self._queued.set()

    async def drain(self) -> None:
        """Acknowledge fetches in order as their deliveries complete; recover failed ones
        (see the module docstring). Runs until cancelled, or raises :class:`RouteError`."""
        try:
            while True:
                if not self.flights:
                    self._queued.clear()
                    await self._queued.wait()
                    continue
                head = self.flights[0]
                await _settled(head.sent)
                if any(_first_failed(s) is not None for s in head.sent):
                    await self._recover()
                    continue
                self.flights.popleft()
                await self._ack(head.token)
                self._room.set()
        except RouteError as exc:
            self.failure = exc
            self._room.set()  # a waiting submit sees the failure
            self._on_fail(exc)
            raise

    async def _recover(self) -> None:
        async with self._sending:  # nothing new is sent until the order is restored
            attempt = 1
            while True:
                flights = list(self.flights)
                await _settled([s for f in flights for s in f.sent])
                first: dict[int, BaseException] = {}  # partition -> its first failure
                for f in flights:
                    for s in f.sent:
                        for fut in s.futures:
                            err = _error(fut)
                            if err is not None:
                                first.setdefault(s.partition, err)
                            elif s.partition in first:
                                raise RouteError(
                                    f"a record to partition {s.partition} was delivered after "
                                    f"an earlier one failed ({first[s.partition]!r}); sending "
                                    "that one again would break the order"
                                ) from first[s.partition]
                if not first:
                    return
                err = next(iter(first.values()))
                if attempt >= self.attempts:
                    raise RouteError(f"routing failed {attempt} times: {err!r}") from err
                delay = self._delay(attempt)
                log.warning("routing to %d partition(s) failed (%r); sending again in %.1f s "
                            "(attempt %d of %d)", len(first), err, delay, attempt + 1,
                            self.attempts)
                await self._sleep(delay)
                for f in flights:
                    again: list[RoutedSent] = []
                    for s in f.sent:
                        i = _first_failed(s)
                        if i is None:
                            again.append(s)
                            continue
                        # Delivered up to i (no hole, checked above): send the rest again.
                        if i:
                            again.append(RoutedSent(s.futures[:i], s.partition, s.records[:i]))
                        self.retries += len(s.records) - i
                        again += await self._resend(s.partition, s.records[i:])
                    f.sent = again
                attempt += 1
