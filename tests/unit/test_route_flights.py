"""The router's in-flight fetches (agents/worker/flights.py): sent without waiting, acknowledged
to faust in order once delivered, failed deliveries sent again only when that keeps the order
per by-zone partition, and a loud stop otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from agents.worker.flights import RouteFlights
from agents.worker.publish import RoutedSent
from agents.worker.router import RouteError
from streams.route import RoutedRecord


class Broker:
    """Stands in for the producer: every send gets a future the test settles."""

    def __init__(self) -> None:
        self.sent: list[RoutedSent] = []  # in send order, resends included
        self.acked: list[Any] = []
        self.failures: list[RouteError] = []
        self.sleeps: list[float] = []

    def _send(self, fetch: str, partitions: Sequence[int]) -> list[RoutedSent]:
        loop = asyncio.get_running_loop()
        out = [RoutedSent([loop.create_future()], p,
                          [RoutedRecord(p, fetch.encode(), fetch.encode(), None, [])])
               for p in partitions]
        self.sent += out
        return out

    async def send(self, messages: Sequence[Any]) -> list[RoutedSent]:
        fetch, partitions = messages[0]
        return self._send(fetch, partitions)

    async def resend(self, partition: int, records: Sequence[RoutedRecord]
                     ) -> list[RoutedSent]:
        return self._send(bytes(records[0].key or b"").decode(), [partition])

    async def ack(self, token: Any) -> None:
        self.acked.append(token)

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        await asyncio.sleep(0)

    def flights(self, **kw: Any) -> RouteFlights:
        return RouteFlights(self.send, self.resend, self.ack, on_fail=self.failures.append,
                            sleep=self.sleep, **kw)

    def of(self, fetch: str, partition: int) -> list[RoutedSent]:
        """The sends of ``fetch`` to ``partition``, oldest first."""
        return [s for s in self.sent
                if s.partition == partition and s.records[0].key == fetch.encode()]

    def order(self, partition: int) -> list[str]:
        """The fetches whose records reached ``partition`` (delivered), in send order."""
        return [bytes(s.records[0].key or b"").decode() for s in self.sent
                if s.partition == partition and s.futures[0].done() and not s.futures[0].cancelled()
                and s.futures[0].exception() is None]


async def spin(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def until(cond: Any, what: str) -> None:
    """Let the loop run until ``cond()`` holds (bounded)."""
    for _ in range(10_000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never: {what}")


def run(coro: Any) -> None:
    asyncio.run(coro())


def test_fetches_are_sent_without_waiting_and_acknowledged_in_order() -> None:
    async def go() -> None:
        b = Broker()
        fl = b.flights()
        drain = asyncio.create_task(fl.drain())
        await fl.submit("e1", [("f1", [0, 1])])
        await fl.submit("e2", [("f2", [0])])  # returns before f1 is acknowledged
        assert len(b.sent) == 3
        assert b.acked == []
        b.of("f2", 0)[0].futures[0].set_result(None)
        await spin()
        assert b.acked == []  # f2 is delivered, but f1 before it is not
        b.of("f1", 0)[0].futures[0].set_result(None)
        await spin()
        assert b.acked == []  # f1 only half delivered
        b.of("f1", 1)[0].futures[0].set_result(None)
        await until(lambda: b.acked == ["e1", "e2"], "both acknowledged, in order")
        assert len(fl) == 0
        drain.cancel()

    run(go)


def test_a_quiet_input_still_gets_its_last_fetch_acknowledged() -> None:
    # Nothing more arrives after the fetch: its acknowledgement must not wait for a next one
    # (the routing lag, and with it the lanes' idleness, follows the committed offsets).
    async def go() -> None:
        b = Broker()
        fl = b.flights()
        drain = asyncio.create_task(fl.drain())
        await fl.submit("e1", [("f1", [3])])
        b.sent[0].futures[0].set_result(None)
        await until(lambda: b.acked == ["e1"], "the last fetch acknowledged")
        drain.cancel()

    run(go)


def test_at_most_max_flights_are_in_flight() -> None:
    async def go() -> None:
        b = Broker()
        fl = b.flights(max_flights=2)
        drain = asyncio.create_task(fl.drain())
        await fl.submit("e1", [("f1", [0])])
        await fl.submit("e2", [("f2", [0])])
        third = asyncio.create_task(fl.submit("e3", [("f3", [0])]))
        await spin()
        assert not third.done()
        assert len(b.sent) == 2
        b.sent[0].futures[0].set_result(None)
        await asyncio.wait_for(third, 5)
        assert len(b.sent) == 3
        assert b.acked == ["e1"]
        drain.cancel()

    run(go)


def test_failed_batches_are_sent_again_in_their_order_and_then_acknowledged() -> None:
    async def go() -> None:
        b = Broker()
        fl = b.flights(attempts=3)
        drain = asyncio.create_task(fl.drain())
        await fl.submit("e1", [("f1", [0, 1])])
        await fl.submit("e2", [("f2", [0])])
        # The broker went away: f1 and f2 failed on partition 0; f1 reached partition 1.
        b.of("f1", 1)[0].futures[0].set_result(None)
        b.of("f1", 0)[0].futures[0].set_exception(ConnectionError("broker gone"))
        await spin()  # the drainer saw f1 fail: it waits for f2 to settle, sending nothing
        late_submit = asyncio.create_task(fl.submit("e3", [("f3", [0])]))
        await spin()
        assert b.of("f3", 0) == []  # no new send while the order is being restored
        b.of("f2", 0)[0].futures[0].set_exception(ConnectionError("broker gone"))
        await until(lambda: len(b.of("f2", 0)) == 2, "f2 sent again")
        # Sent again in the original order, f1 before f2; f3 waited until the order was whole.
        again = [bytes(s.records[0].key or b"").decode() for s in b.sent[3:]]
        assert again[:2] == ["f1", "f2"]
        assert len(b.of("f1", 1)) == 1  # what was delivered is not sent again
        for s in b.sent:
            if not s.futures[0].done():
                s.futures[0].set_result(None)
        await asyncio.wait_for(late_submit, 5)
        for s in b.sent:
            if not s.futures[0].done():
                s.futures[0].set_result(None)
        await until(lambda: b.acked == ["e1", "e2", "e3"], "all three acknowledged")
        assert b.order(0) == ["f1", "f2", "f3"]
        assert fl.retries == 2
        assert b.sleeps == [0.5]
        assert b.failures == []
        drain.cancel()

    run(go)


def test_a_batch_delivered_after_an_earlier_failure_stops_routing_loudly() -> None:
    async def go() -> None:
        b = Broker()
        fl = b.flights(attempts=5)
        drain = asyncio.create_task(fl.drain())
        await fl.submit("e1", [("f1", [0])])
        await fl.submit("e2", [("f2", [0])])
        b.of("f1", 0)[0].futures[0].set_exception(ConnectionError("expired"))
        b.of("f2", 0)[0].futures[0].set_result(None)  # a hole: f2 is on the partition, f1 is not
        with pytest.raises(RouteError, match="would break the order"):
            await asyncio.wait_for(drain, 5)
        assert b.acked == []
        assert len(b.failures) == 1
        assert len(b.sent) == 2  # nothing sent again out of order
        with pytest.raises(RouteError):
            await fl.submit("e3", [("f3", [0])])

    run(go)


def test_a_fetch_that_keeps_failing_is_not_acknowledged_and_stops_routing() -> None:
    async def go() -> None:
        b = Broker()
        fl = b.flights(attempts=3)
        drain = asyncio.create_task(fl.drain())
        await fl.submit("e1", [("f1", [2])])

        async def fail_all() -> None:
            while not drain.done():
                for s in b.sent:
                    if not s.futures[0].done():
                        s.futures[0].set_exception(ConnectionError("broker gone"))
                await asyncio.sleep(0)

        failing = asyncio.create_task(fail_all())
        with pytest.raises(RouteError, match="routing failed 3 times"):
            await asyncio.wait_for(drain, 5)
        await failing
        assert b.acked == []
        assert len(b.failures) == 1
        assert len(b.of("f1", 2)) == 3
        assert b.sleeps == [0.5, 1.0]

    run(go)


def test_an_empty_fetch_is_acknowledged() -> None:
    async def go() -> None:
        b = Broker()

        async def nothing(messages: Sequence[Any]) -> list[RoutedSent]:
            return []

        fl = RouteFlights(nothing, b.resend, b.ack, on_fail=b.failures.append)
        drain = asyncio.create_task(fl.drain())
        await fl.submit("e1", [])
        await until(lambda: b.acked == ["e1"], "the empty fetch acknowledged")
        drain.cancel()

    run(go)


def test_only_the_failed_tail_of_a_send_is_sent_again() -> None:
    # One send of three records to a partition: the first two delivered, the third failed.
    async def go() -> None:
        loop = asyncio.get_running_loop()
        recs = [RoutedRecord(4, b"z", f"r{i}".encode(), None, []) for i in range(3)]
        first = RoutedSent([loop.create_future() for _ in recs], 4, recs)
        resent: list[list[bytes | None]] = []
        acked: list[Any] = []

        async def send(messages: Sequence[Any]) -> list[RoutedSent]:
            return [first]

        async def resend(partition: int, records: Sequence[RoutedRecord]) -> list[RoutedSent]:
            resent.append([r.value for r in records])
            done: asyncio.Future[Any] = loop.create_future()
            done.set_result(None)
            return [RoutedSent([done] * len(records), partition, records)]

        async def ack(token: Any) -> None:
            acked.append(token)

        async def no_sleep(s: float) -> None:
            await asyncio.sleep(0)

        fl = RouteFlights(send, resend, ack, on_fail=lambda e: None, sleep=no_sleep)
        drain = asyncio.create_task(fl.drain())
        await fl.submit("e1", [object()])
        first.futures[0].set_result(None)
        first.futures[1].set_result(None)
        first.futures[2].set_exception(ConnectionError("expired"))
        await until(lambda: acked == ["e1"], "acknowledged after the tail was sent again")
        assert resent == [[b"r2"]]
        assert fl.retries == 1
        drain.cancel()

    run(go)
