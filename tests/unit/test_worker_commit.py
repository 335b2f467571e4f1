"""The worker's commit protocol (agents/worker/worker.py), against a fake producer whose delivery
futures the test settles: a snapshot records an input offset only once every output derived
from the input before it is acknowledged; a failed delivery is sent again and the offset does
not move meanwhile; a delivery that keeps failing stops the worker; the wall-clock timer
cannot snapshot a batch whose outputs are not queued yet. No broker."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest
from aiokafka.errors import KafkaError
from faust.types import TP

from agents.config import Settings
from agents.metrics import Metrics
from agents.worker.deliveries import Deliveries, DeliveryFailed
from agents.worker.publish import RoutedSent
from agents.worker.router import RouteError
from agents.worker.state import Lineage
from agents.worker.transport import RecordBatch
from agents.worker.worker import DELIVERY_FAILED_EXIT, Worker
from streams import WindowedDensityEngine
from streams.kernels import ZI_PART
from streams.lanes import WIDTH as LANE_WIDTH
from streams.pipeline import Pipeline
from streams.records import SourceMessage

from .test_density_kernels import GRACE, SLIDE, WINDOW, ZONES, random_stream
from .test_recovery import messages

PARTS = (0, 1, 2)


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes, headers: Any
               ) -> object | None:
        if len(self.records) >= 50:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    """Every send gets a future the test resolves; ``gate`` (if set) holds sends back, like
    a full accumulator; ``fail_all`` fails every delivery at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[bytes | None, bytes]], asyncio.Future[Any]]] = []
        self.gate: asyncio.Event | None = None
        self.fail_all = False
        self.auto_ack = False

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def _future(self, topic: str, recs: list[tuple[bytes | None, bytes]]
                      ) -> asyncio.Future[Any]:
        if self.gate is not None:
            await self.gate.wait()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail_all:
            fut.set_exception(ConnectionError("broker gone"))
        elif self.auto_ack:
            fut.set_result(None)
        self.sent.append((topic, recs, fut))
        return fut

    async def send(self, topic: str, value: bytes, *, key: bytes | None = None,
                   partition: int | None = None, headers: Any = None) -> asyncio.Future[Any]:
        return await self._future(topic, [(key, value)])

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int
                         ) -> asyncio.Future[Any]:
        return await self._future(topic, list(batch.records))

    def pending(self) -> list[asyncio.Future[Any]]:
        return [f for _, _, f in self.sent if not f.done()]

    def ack_all(self) -> int:
        futs = self.pending()
        for f in futs:
            f.set_result(None)
        return len(futs)


class FakeConsumer:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.ends: dict[int, int] | None = {}  # None: the broker is unreachable

        self.committed: dict[TP, int] = {}
        self.refuse_commits = False  # a rebalance under way

    def assignment(self) -> set[TP]:
        return {TP(self.topic, p) for p in PARTS}

    async def _commit(self, offsets: dict[TP, int]) -> bool:
        if self.refuse_commits:
            return False
        self.committed.update(offsets)
        return True

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        if self.ends is None:
            raise ConnectionError("broker gone")
        return {tp: self.ends.get(tp.partition, 0) for tp in tps}


class Rig:
    def __init__(self, tmp: Path, *, attempts: int = 3, idle_s: float = 30.0,
                 routed: bool = False) -> None:
        # Fetches here are of the sensor topic: the worker ingests them itself unless
        # ``routed`` (then they stand for by-zone records without an origin).
        self.settings = replace(Settings.from_env({}), route_by_zone=routed, state_dir=tmp,
                                snapshot_s=3600.0,
                                idle_s=idle_s, window_s=WINDOW / 1000, slide_s=SLIDE / 1000,
                                grace_s=GRACE / 1000)
        engine = WindowedDensityEngine(ZONES, window_ms=WINDOW, slide_ms=SLIDE, grace_ms=GRACE,
                                       idle_ms=round(idle_s * 1000))
        self.pipe = Pipeline(ZONES, engine=engine)
        self.producer = FakeProducer()
        self.topic = self.settings.topics.sensor_events
        self.consumer = FakeConsumer(self.topic)
        self.state: list[tuple[bytes, bytes | None]] = []
        self.exits: list[int] = []
        self.wall = 1_771_160_000.0  # after the recorded stream (tests/unit/test_recovery.py)
        self.mono = 1000.0

        async def send_state(key: bytes, value: bytes | None) -> None:
            self.state.append((key, value))

        async def no_sleep(s: float) -> None:
            await asyncio.sleep(0)

        self.worker = Worker(
            self.settings, self.pipe, Metrics(), producer=lambda: self.producer,
            send_state=send_state, consumer=lambda: self.consumer, exit=self.exits.append,
            wall=lambda: self.wall, monotonic=lambda: self.mono)
        self.worker.deliveries = Deliveries(self.worker._resend, attempts=attempts,
                                            sleep=no_sleep)
        for p in PARTS:
            self.worker.restored.add(p)
            self.worker.lineages[p] = Lineage(epoch=1)
            self.worker.next_offset[p] = 0

    def snapshot_offsets(self) -> list[dict[int, int]]:
        """The offsets recorded by each snapshot write, in order (from the manifests)."""
        out: list[dict[int, int]] = []
        for key, value in self.state:
            if value is None or key.count(b"/") != 2:
                continue
            m = orjson.loads(value)
            if not out or m["partition"] in out[-1]:
                out.append({})
            out[-1][m["partition"]] = m["offset"]
        return out


def fetches() -> list[list[SourceMessage]]:
    msgs = messages(random_stream(random.Random(5), 1200, partitions=len(PARTS)))
    return [msgs[i:i + 200] for i in range(0, len(msgs), 200)]


def ends(batch: list[SourceMessage]) -> dict[int, int]:
    out: dict[int, int] = {}
    for s in batch:
        out[s.partition] = max(out.get(s.partition, 0), s.offset + 1)
    return out


async def spin(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


@pytest.mark.kernels
def test_a_snapshot_waits_until_every_output_before_it_is_acknowledged(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    async def go() -> None:
        batches = fetches()
        for b in batches[:3]:
            await rig.worker.ingest_fetch(b)
        assert rig.producer.pending(), "the batches produced outputs"
        snap = asyncio.create_task(rig.worker.snapshot(PARTS))
        await spin()
        # Outputs unacknowledged: nothing recorded yet.
        assert rig.snapshot_offsets() == []
        assert not snap.done()
        rig.producer.ack_all()
        await snap
        done = {p: max(ends(b).get(p, 0) for b in batches[:3]) for p in PARTS}
        assert rig.snapshot_offsets() == [done]

    run(go)


@pytest.mark.kernels
def test_a_failed_delivery_is_sent_again_and_the_offset_waits_for_it(tmp_path: Path) -> None:
    rig = Rig(tmp_path, attempts=3)

    async def go() -> None:
        batch = fetches()[0]
        await rig.worker.ingest_fetch(batch)
        first = list(rig.producer.sent)
        topic, recs, fut = first[0]
        fut.set_exception(ConnectionError("leader moved"))
        for _, _, f in first[1:]:
            f.set_result(None)
        snap = asyncio.create_task(rig.worker.snapshot(PARTS))
        await spin()
        # The failed records went out again; until the broker takes them, no snapshot.
        again = rig.producer.sent[len(first):]
        assert [r for _, rs, _ in again for r in rs] == recs
        assert all(t == topic for t, _, _ in again)
        assert rig.snapshot_offsets() == []
        assert not snap.done()
        rig.producer.ack_all()
        await snap
        assert rig.snapshot_offsets() == [ends(batch)]
        assert rig.worker.deliveries.retries == len(again)
        assert rig.exits == []

    run(go)


@pytest.mark.kernels
def test_a_delivery_that_keeps_failing_stops_the_worker_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, attempts=3)

    async def go() -> None:
        await rig.worker.ingest_fetch(fetches()[0])
        rig.producer.fail_all = True
        for _, _, f in rig.producer.sent:
            f.set_exception(ConnectionError("broker gone"))
        with pytest.raises(DeliveryFailed):
            await rig.worker.snapshot(PARTS)
        # Nor does the hand-over at a revoke or the final snapshot at a stop write one.
        await rig.worker.on_revoked(None, {TP(rig.topic, 0)})
        await rig.worker.on_shutdown()

    with caplog.at_level(logging.WARNING, logger="agents.worker.worker"):
        run(go)
    assert rig.exits == [DELIVERY_FAILED_EXIT]
    assert rig.snapshot_offsets() == []
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1, caplog.text
    assert "could not be delivered" in critical[0].getMessage()
    assert "3 times" in critical[0].getMessage()


@pytest.mark.kernels
def test_the_wall_clock_cannot_snapshot_a_batch_whose_outputs_are_not_queued(
    tmp_path: Path
) -> None:
    rig = Rig(tmp_path)
    rig.settings = rig.worker.settings = replace(rig.settings, snapshot_s=1.0)

    async def go() -> None:
        batch = fetches()[0]
        rig.producer.gate = asyncio.Event()  # the producer's buffer is full: sends wait
        ingest = asyncio.create_task(rig.worker.ingest_fetch(batch))
        await spin()
        assert not ingest.done()
        rig.mono += 10  # a snapshot is due
        rig.worker.unsnapshotted.update(PARTS)
        timer = asyncio.create_task(rig.worker.wall_clock())
        await spin()
        # The timer waits for the batch: no snapshot of its offsets, nor of the state
        # it changed, while its outputs are not even queued.
        assert rig.snapshot_offsets() == []
        assert not timer.done()
        rig.producer.gate.set()
        await spin(50)
        rig.producer.ack_all()
        await asyncio.wait_for(asyncio.gather(ingest, timer), 5)
        recorded = rig.snapshot_offsets()
        assert recorded
        assert recorded[-1] == ends(batch)

    run(go)


@pytest.mark.kernels
def test_too_many_pending_deliveries_hold_the_next_batch_back(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.worker.deliveries.max_pending = 2

    async def go() -> None:
        batch = fetches()[0]
        ingest = asyncio.create_task(rig.worker.ingest_fetch(batch))
        await spin()
        assert not ingest.done(), "back-pressure: the batch awaits its deliveries"
        assert rig.worker.next_offset == dict.fromkeys(PARTS, 0)
        rig.producer.ack_all()
        await spin()
        while not ingest.done():
            rig.producer.ack_all()
            await spin()
        assert rig.worker.next_offset == ends(batch)

    run(go)


@pytest.mark.kernels
@pytest.mark.parametrize("routed", [False, True])
def test_a_revoked_partition_is_never_published_for_again(tmp_path: Path, routed: bool
                                                          ) -> None:
    """After losing partition p, the worker forgets its zones: the wall clock closes no more
    of their windows (the bug: 15 density records for a zone it no longer owned, ending
    in a false ``density: null``)."""
    rig = Rig(tmp_path, idle_s=1.0, routed=routed)
    rig.producer.auto_ack = True
    width = LANE_WIDTH if routed else 1  # engine partitions (lanes) per worker partition

    async def go() -> None:
        for b in fetches():
            await rig.worker.ingest_fetch(b)
        engine = rig.pipe.engine
        assert isinstance(engine, WindowedDensityEngine)
        lost = 0
        owned = [z for z in rig.pipe.zones if engine.zone_clock_ms(z) is not None]
        part_of = {z: int(engine.zi[engine.zone_index[z], ZI_PART]) // width for z in owned}
        gone_zones = {z for z, p in part_of.items() if p == lost}
        assert gone_zones
        assert gone_zones != set(owned)
        await rig.worker.on_revoked(None, {TP(rig.worker.ingested_topic, lost)})
        assert lost not in rig.worker.next_offset
        for lane in range(lost * width, (lost + 1) * width):  # forgotten, not just frozen
            assert engine.snapshot(lane)["zone_ids"].tolist() == []
        before = len(rig.producer.sent)
        # Hours of wall time, every partition (still held ones) confirmed quiet.
        rig.consumer.ends = dict(rig.worker.next_offset)
        for _ in range(30):
            rig.wall += 120
            rig.mono += 120
            await rig.worker.probe_ends()
            await rig.worker.wall_clock()
        zones_published = {orjson.loads(v)["zone_id"]
                           for t, recs, _ in rig.producer.sent[before:]
                           if t == rig.settings.topics.density for _, v in recs}
        assert zones_published, "the partitions still held go on"
        assert not zones_published & gone_zones

    run(go)


@pytest.mark.kernels
def test_a_dropped_partition_closes_no_more_windows_whatever_the_clock() -> None:
    engine = WindowedDensityEngine(ZONES, window_ms=WINDOW, slide_ms=SLIDE, grace_ms=GRACE)
    pipe = Pipeline(ZONES, engine=engine)
    now = 1_771_160_000_000  # after the recorded stream
    for b in fetches():
        pipe.process_sensor_batch(b, now_ms=now)
    owned = [z for z in pipe.zones if engine.zone_clock_ms(z) is not None]
    part_of = {z: int(engine.zi[engine.zone_index[z], ZI_PART]) for z in owned}
    gone = set(pipe.drop_partition(0))
    assert gone == {z for z, p in part_of.items() if p == 0}
    assert gone != set(owned)
    assert all(engine.zone_clock_ms(z) is None for z in gone)
    assert engine.watermark(0) is None
    later = pipe.tick(now + 3_600_000, partitions=None)  # every partition moves on
    published = {orjson.loads(r.value)["zone_id"] for r in later.density}
    assert published
    assert not published & gone
    assert all(a["level"] == 0 for a in pipe.alerts.export_state(gone).values())


def test_quiet_partitions_need_a_recent_successful_log_end_query(tmp_path: Path) -> None:
    rig = Rig(tmp_path, idle_s=30.0)
    w = rig.worker
    w.next_offset = {0: 10, 1: 5, 2: 7}

    async def go() -> None:
        rig.consumer.ends = {0: 10, 1: 9, 2: 7}
        await w.probe_ends()
        assert w.quiet_partitions() == {0, 2}  # 1 has 4 records not read yet
        assert w.probe_fresh_s == 30.0
        rig.mono += 29
        assert w.quiet_partitions() == {0, 2}
        # The broker is gone: the queries fail, and what they said ages out.
        rig.consumer.ends = None
        await w.probe_ends()
        assert w.quiet_partitions() == {0, 2}
        rig.mono += 2
        await w.probe_ends()
        assert w.quiet_partitions() == set()
        # Back, quiet again.
        rig.consumer.ends = {0: 10, 1: 5, 2: 8}
        await w.probe_ends()
        assert w.quiet_partitions() == {0, 1}

    run(go)


@pytest.mark.kernels
def test_a_broker_outage_makes_no_buffered_reading_late(tmp_path: Path) -> None:
    """Readings flow, the broker goes away for 3 minutes (producers buffer), comes back and
    the buffered readings arrive: they count, none is dead-lettered as late (the bug: every
    partition moved on by wall time during the outage)."""
    rig = Rig(tmp_path, idle_s=30.0)
    w = rig.worker
    t0 = int(rig.wall * 1000)

    def reading(i: int, ts_ms: int, arrival_ms: int, offset: int) -> SourceMessage:
        doc = {"event_id": f"e{i}", "sensor_id": "a-cam1", "zone_id": "a",
               "kind": "occupancy", "ts": ts_ms, "count": 20}
        return SourceMessage(rig.topic, 0, offset, arrival_ms, b"a", orjson.dumps(doc))

    async def go() -> None:
        off = 0
        for i in range(30):  # a reading every 2 s for a minute
            ts = t0 + i * 2000
            rig.wall, rig.mono = ts / 1000, 1000 + i * 2
            await w.ingest_fetch([reading(i, ts, ts, off)])
            off += 1
            rig.consumer.ends = {0: off}
            await w.probe_ends()
            await w.wall_clock()
        rig.producer.ack_all()
        outage_start = t0 + 60_000
        rig.consumer.ends = None
        for k in range(1, 91):  # 3 minutes without a broker; the timer keeps ticking
            rig.wall, rig.mono = (outage_start + k * 2000) / 1000, 1060 + k * 2
            await w.probe_ends()
            await w.wall_clock()
        back = outage_start + 182_000
        buffered = [reading(100 + j, outage_start + j * 2000, back, off + j) for j in range(90)]
        before = len(rig.producer.sent)
        rig.wall = back / 1000
        await w.ingest_fetch(buffered)
        dlq = [orjson.loads(v) for t, recs, _ in rig.producer.sent[before:]
               if t == rig.settings.topics.dlq for _, v in recs]
        assert dlq == [], [d["reason"] for d in dlq]
        assert w.next_offset[0] == off + 90

    run(go)


@pytest.mark.kernels
def test_the_engine_moves_on_only_the_partitions_it_is_told(tmp_path: Path) -> None:
    from schemas import Kind, SensorEvent  # noqa: PLC0415

    e = WindowedDensityEngine(ZONES, window_ms=WINDOW, slide_ms=SLIDE, grace_ms=GRACE,
                              idle_ms=30_000)
    t0 = 1_771_150_000_000
    e.ingest([SensorEvent("x", "a-cam1", "a", Kind.OCCUPANCY, t0, count=5),
              SensorEvent("y", "b-line1", "b", Kind.LINE_COUNT, t0, entries=1, exits=0)],
             [0, 1], wall_ms=t0, arrivals=[t0, t0])
    e.advance(t0 + 100_000, partitions={1})
    assert e.zone_clock_ms("a") == t0  # held: its idleness restarted
    assert e.zone_clock_ms("b") == t0 + 70_000
    e.advance(t0 + 120_000, partitions={0, 1})
    assert e.zone_clock_ms("a") == t0  # idle counts from the hold, not from the last reading
    e.advance(t0 + 140_000, partitions={0})
    assert e.zone_clock_ms("a") == t0 + 10_000


class FlakyRouter:
    """A ZoneRouter whose broker fails every delivery."""

    def __init__(self) -> None:
        self.calls = 0
        self.zones: list[Any] = []

    def set_zones(self, zones: Any) -> None:
        self.zones = list(zones)

    async def send_fetch(self, producer: Any, messages: Any) -> list[RoutedSent]:
        self.calls += 1
        return [self._failed()]

    async def resend(self, producer: Any, partition: int, records: Any) -> list[RoutedSent]:
        self.calls += 1
        return [self._failed()]

    @staticmethod
    def _failed() -> RoutedSent:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_exception(KafkaError("broker gone"))
        return RoutedSent([fut], 0, [cast(Any, None)])


def test_a_fetch_that_cannot_be_routed_stops_the_worker_unacknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, attempts=3)
    router = FlakyRouter()
    rig.worker.router = cast(Any, router)
    acked: list[Any] = []

    async def ack(token: Any) -> None:
        acked.append(token)

    async def go() -> None:
        flights = rig.worker.route_flights(ack)
        drain = asyncio.create_task(flights.drain())
        await flights.submit("fetch", fetches()[0])
        # faust never hears the fetch done, so its offsets are not committed.
        with pytest.raises(RouteError):
            await asyncio.wait_for(drain, 10)

    with caplog.at_level(logging.WARNING, logger="agents.worker.flights"):
        run(go)
    assert router.calls == 3
    assert acked == []
    assert rig.exits == [DELIVERY_FAILED_EXIT]
    assert "routing failed 3 times" in caplog.text


def test_the_router_follows_the_live_registry(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    router = FlakyRouter()
    rig.worker.router = cast(Any, router)
    rig.pipe.set_zones(ZONES[:1])

    async def go() -> None:
        sent = await rig.worker._route_send(fetches()[0])
        assert sent[0].futures[0].exception() is not None

    run(go)
    assert [z.zone_id for z in router.zones] == [ZONES[0].zone_id]


class BrokenRouter(FlakyRouter):
    """A ZoneRouter with a bug: it raises on every fetch."""

    async def send_fetch(self, producer: Any, messages: Any) -> list[RoutedSent]:
        raise AssertionError("Need at least one: key or value")


class FakeStream:
    """The faust stream a router agent iterates (manual acks)."""

    def __init__(self, events: list[Any]) -> None:
        self._events = events
        self.acked: list[Any] = []

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> Any:
        for e in self._events:
            yield e

    async def ack(self, event: Any) -> None:
        self.acked.append(event)


def test_a_router_agent_that_crashes_stops_the_worker_instead_of_hanging(
    tmp_path: Path
) -> None:
    # The fetch it crashed on is never acknowledged: without a stop, faust waits for it
    # forever (a clean stop hung on "wait_empty") and nothing after it is routed.
    rig = Rig(tmp_path, routed=True)
    rig.worker.router = cast(Any, BrokenRouter())
    stream = FakeStream([SimpleNamespace(value=RecordBatch(fetches()[0]))])

    async def go() -> None:
        with pytest.raises(AssertionError):
            await rig.worker.route(stream)

    run(go)
    assert stream.acked == []
    assert rig.exits == [DELIVERY_FAILED_EXIT]


@pytest.mark.kernels
def test_a_snapshot_commits_its_offsets_and_faust_commits_none_of_the_ingested_topic(
    tmp_path: Path
) -> None:
    # The ingested topic's committed offset is the snapshot's: faust, which acks a fetch it
    # skips (an older generation's), once committed past readings no snapshot held, and a
    # later owner resumed there (a zone's first 100 s never windowed, test_scale_out).
    rig = Rig(tmp_path)
    rig.producer.auto_ack = True

    async def go() -> None:
        for b in fetches()[:2]:
            await rig.worker.ingest_fetch(b)
        await rig.worker.snapshot(PARTS)
        assert rig.consumer.committed == {
            TP(rig.topic, p): o for p, o in rig.worker.next_offset.items()}
        assert rig.consumer.committed, "something was ingested"
        # A refused commit (rebalance) leaves the older offset: a longer replay, no gap.
        before = dict(rig.consumer.committed)
        rig.consumer.refuse_commits = True
        for b in fetches()[2:4]:
            await rig.worker.ingest_fetch(b)
        await rig.worker.snapshot(PARTS)
        assert rig.consumer.committed == before

    run(go)

    from agents.worker.app import build_app  # noqa: PLC0415

    for routed in (True, False):
        app = build_app(replace(rig.settings, route_by_zone=routed))
        ingest = [a for a in app.agents.values() if "ingest" in a.name]
        assert len(ingest) == 1
        assert ingest[0].channel.acks is False
