"""The zone router (streams/route.py) and stage 2 over its output (Pipeline.process_routed_batch).

Issue 13, "A zone can land on two partitions": the same recorded night published under two
partitioners (librdkafka's CRC32 and murmur2), with gateway batches that mix zones, must give
each zone one by-zone partition, and the same densities and alerts as one in-order run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from agents.config import Topics
from agents.devtools.simulator import SCENARIOS, simulate
from agents.worker.router import RouteError, ZoneRouter
from schemas import load_zones
from streams.pipeline import Pipeline
from streams.records import (
    ITEMS_HEADER,
    ORIGIN_HEADER,
    UNDECODABLE_HEADER,
    UNDECODABLE_OFFSETS_HEADER,
    Consumed,
    OutRecord,
    SourceMessage,
    read_origin,
)
from streams.route import RoutedRecord, Router, zone_partition

ZONES = load_zones(Path(__file__).resolve().parents[2] / "deploy/zones/phitsanulok.yaml")
N = 8
T0 = 1_771_150_000_000


def crc32_partition(key: bytes) -> int:  # librdkafka's default for a keyed message
    return zlib.crc32(key) % N


def murmur2_partition(key: bytes) -> int:  # the Java client's and aiokafka's
    return (murmur2(key) & 0x7FFFFFFF) % N


def published(events: Sequence[tuple[int, bytes, bytes]]) -> list[SourceMessage]:
    """The recorded deliveries as a sensor topic holds them: four slices, alternating the two
    partitioners, every third delivery merged with the next (another zone's) into one gateway
    batch. Record timestamps are the arrivals (LogAppendTime)."""
    out: list[SourceMessage] = []
    offsets: Counter[int] = Counter()
    slice_len = len(events) // 4 + 1
    i = 0
    while i < len(events):
        part_of = crc32_partition if (i // slice_len) % 2 == 0 else murmur2_partition
        t, key, value = events[i]
        if i % 3 == 0 and i + 1 < len(events) and events[i + 1][1] != key:
            t, _, second = events[i + 1]
            value = orjson.dumps(orjson.loads(value) + orjson.loads(second))
            i += 1
        p = part_of(key)
        out.append(SourceMessage("sensors", p, offsets[p], t, key, value, (("gw", b"7"),)))
        offsets[p] += 1
        i += 1
    return out


def as_consumed(records: Sequence[RoutedRecord], topic: str = "by-zone",
                start: dict[int, int] | None = None) -> list[SourceMessage]:
    """What a consumer of the by-zone topic reads back of ``records``."""
    offsets: Counter[int] = Counter(start or {})
    out = []
    for r in records:
        out.append(SourceMessage(topic, r.partition, offsets[r.partition], r.timestamp_ms,
                                 r.key, r.value, tuple(r.headers)))
        offsets[r.partition] += 1
    return out


def fetches(messages: Sequence[SourceMessage], size: int = 50) -> list[list[SourceMessage]]:
    """Per-partition fetches of ``size`` messages, interleaved across partitions in arrival
    order (as one worker holding every partition reads them)."""
    out: list[list[SourceMessage]] = []
    cur: dict[int, list[SourceMessage]] = {}
    for m in sorted(messages, key=lambda m: (m.timestamp or 0, m.partition, m.offset)):
        cur.setdefault(m.partition, []).append(m)
        if len(cur[m.partition]) >= size:
            out.append(cur.pop(m.partition))
    return out + list(cur.values())


def outcome(density: list[OutRecord], alerts: list[OutRecord]) -> tuple[list[Any], list[Any]]:
    d = sorted((v["zone_id"], v["window_end"], v["density"], v["readings"])
               for v in (orjson.loads(r.value) for r in density))
    a = sorted((v["zone_id"], v["ts"], v["level"], v["status"], v["alert_id"])
               for v in (orjson.loads(r.value) for r in alerts))
    return d, a


def run(batches: Sequence[Sequence[Consumed]], routed: bool) -> tuple[list[Any], list[Any]]:
    pipe = Pipeline(ZONES)
    density: list[OutRecord] = []
    alerts: list[OutRecord] = []
    for b in batches:
        out = pipe.process_routed_batch(b) if routed else pipe.process_sensor_batch(b)
        density += out.density
        alerts += out.alerts
    end = pipe.finish()
    return outcome(density + end.density, alerts + end.alerts)


def test_zone_partition_is_crc32_and_pinned() -> None:
    # A change here remaps every zone of every deployment: it must never happen by accident.
    assert zone_partition("naresuan-bridge", 8) == zlib.crc32(b"naresuan-bridge") % 8 == 1
    assert [zone_partition(z, 8) for z in ("wat-yai-vihara", "wat-yai-grounds",
                                            "station-forecourt")] == [2, 6, 0]
    assert zone_partition("วิหาร", 3) == zlib.crc32("วิหาร".encode()) % 3


@pytest.mark.kernels
def test_a_recorded_night_under_two_partitioners_gives_one_partition_per_zone() -> None:
    sim = simulate(SCENARIOS["crush"], ZONES, seed=1)
    source = published(sim.events)
    # The premise holds for this input: zones spread over several source partitions,
    # and messages that mix zones.
    spread: dict[bytes, set[int]] = {}
    for m in source:
        spread.setdefault(m.key or b"", set()).add(m.partition)
    assert max(len(s) for s in spread.values()) >= 2
    assert sum(1 for m in source if len({e["zone_id"] for e in orjson.loads(m.value or b"[]")})
               > 1) > 100

    router = Router(ZONES, N, reports_topic="reports")
    records = router.route_batch(source)
    where: dict[str, set[int]] = {}
    for r in records:
        assert r.key is not None
        where.setdefault(r.key.decode(), set()).add(r.partition)
    assert where == {z: {zone_partition(z, N)} for z in where}
    assert {e["zone_id"] for m in source for e in orjson.loads(m.value or b"[]")} == set(where)

    # Reference: the un-split recorded deliveries, in order, one partition.
    reference = [SourceMessage("sensors", 0, j, t, k, v) for j, (t, k, v) in enumerate(sim.events)]
    expected = run([reference[j:j + 300] for j in range(0, len(reference), 300)], routed=False)
    assert len(expected[0]) > 1000
    assert any(a[2] == "critical" for a in expected[1])
    # Read straight from the source partitions (the worker before the router): it differs.
    assert run(fetches(source), routed=False) != expected
    # Through the router and stage 2: the same densities and alerts, record for record.
    assert run(fetches(as_consumed(records)), routed=True) == expected


def dlq_of(out_dlq: list[OutRecord]) -> list[dict[str, Any]]:
    validator = jsonschema.Draft202012Validator(
        json.loads(schemas.schema_file("dlq-record.v1.json").read_text()))
    docs = [orjson.loads(r.value) for r in out_dlq]
    for d in docs:
        validator.validate(d)
    return docs


def occ(event_id: str, zone_id: str, ts: int = T0, count: int = 10) -> dict[str, Any]:
    sensor = {"wat-yai-vihara": "wy-vihara-cam-1", "naresuan-bridge": "nb-cam-west"}[zone_id]
    return {"event_id": event_id, "sensor_id": sensor, "zone_id": zone_id,
            "kind": "occupancy", "ts": ts, "count": count}


@pytest.mark.kernels
def test_dlq_of_a_split_batch_names_the_original_message_and_item_index() -> None:
    batch = [occ("a", "wat-yai-vihara"), occ("b", "naresuan-bridge"),
             {"event_id": "c", "zone_id": "naresuan-bridge", "kind": "occupancy"},
             "not an event", occ("e", "wat-yai-vihara") | {"count": -1},
             occ("f", "naresuan-bridge") | {"zone_id": "atlantis"}]
    value = orjson.dumps(batch)
    src = SourceMessage("safetour.sensor-events.v1", 5, 4711, T0 + 100, b"gw-9", value,
                        (("trace", b"xyz"),))
    records = Router(ZONES, N, reports_topic="r").route(src)
    by_zone = {r.key: r for r in records}
    assert set(by_zone) == {b"wat-yai-vihara", b"naresuan-bridge", b"gw-9", b"atlantis"}
    assert by_zone[b"gw-9"].partition == 5 % N  # "not an event": the fallback partition
    assert all(r.timestamp_ms == T0 + 100 for r in records)
    items = {r.key: orjson.loads(dict(r.headers)[ITEMS_HEADER]) for r in records}
    assert items == {b"wat-yai-vihara": [0, 4], b"naresuan-bridge": [1, 2], b"gw-9": [3],
                     b"atlantis": [5]}
    assert sorted(i for v in items.values() for i in v) == list(range(len(batch)))

    pipe = Pipeline(ZONES)
    dlq: list[dict[str, Any]] = []
    for r in records:
        dlq += dlq_of(pipe.process_routed_batch(as_consumed([r]), now_ms=T0 + 200).dlq)
    for d in dlq:
        assert d["source"] == {"topic": "safetour.sensor-events.v1", "partition": 5,
                               "offset": 4711, "timestamp_ms": T0 + 100,
                               "key_b64": base64.b64encode(b"gw-9").decode()}
    got = sorted((i["index"], i["reason"], i["pointer"], i["detail"])
                 for d in dlq for i in d["items"])
    assert [g[:3] for g in got] == [(2, "schema", "/2"), (3, "schema", "/3"),
                                    (4, "schema", "/4/count"), (5, "unknown_zone", "/5")]
    # The same message read straight from its source: the same verdicts, item by item, with
    # the same pointers and details (one DLQ record there, one per zone here).
    direct = dlq_of(Pipeline(ZONES).process_sensor_batch([src], now_ms=T0 + 200).dlq)
    assert sorted((i["index"], i["reason"], i["pointer"], i["detail"])
                  for d in direct for i in d["items"]) == got


@pytest.mark.kernels
def test_unroutable_input_is_forwarded_unchanged_and_dead_lettered_as_today() -> None:
    src = [
        SourceMessage("sensors", 11, 1, T0, b"k", b"not json{"),
        SourceMessage("sensors", 11, 2, T0, b"k", None),
        SourceMessage("sensors", 11, 3, T0, None, None, ((UNDECODABLE_HEADER, b"crc"),)),
        SourceMessage("sensors", 11, 4, T0, b"k", b"[]"),
        SourceMessage("sensors", 11, 5, T0, b"k", b'{"kind": "occupancy"}'),
        SourceMessage("sensors", 11, 6, T0, b"k", b"x" * (schemas.MAX_MESSAGE_BYTES + 1)),
        SourceMessage("sensors", 11, 7, T0, b"k", b"42"),
        SourceMessage("sensors", 11, 8, T0, b"k", orjson.dumps([occ("a", "wat-yai-vihara")]
                                                              * (schemas.MAX_BATCH_EVENTS + 1))),
    ]
    router = Router(ZONES, N, reports_topic="r")
    records = router.route_batch(src)
    assert [(r.partition, r.key, r.value) for r in records] == \
        [(11 % N, m.key, m.value) for m in src]
    routed = dlq_of(Pipeline(ZONES).process_routed_batch(as_consumed(records), T0).dlq)
    direct = dlq_of(Pipeline(ZONES).process_sensor_batch(src, T0).dlq)
    assert [(d["reason"], d["source"], d["value_b64"]) for d in routed] == \
        [(d["reason"], d["source"], d["value_b64"]) for d in direct]
    assert len(routed) == len(src)


def report(**fields: Any) -> bytes:
    return orjson.dumps({"report_id": "r1", "ts": T0, "category": "crush",
                         "source": "police"} | fields)


@pytest.mark.kernels
def test_reports_go_to_their_zone_by_id_or_polygon_and_act_there() -> None:
    router = Router(ZONES, N, reports_topic="reports")
    by_id = SourceMessage("reports", 3, 0, T0, None, report(zone_id="naresuan-bridge"))
    by_pos = SourceMessage("reports", 2, 1, T0, b"x", report(report_id="r2", lat=16.82338,
                                                             lon=100.261))
    nowhere = SourceMessage("reports", 1, 2, T0, b"y", report(report_id="r3", lat=0.0, lon=0.0))
    broken = SourceMessage("reports", 1, 3, T0, b"z", b'{"report_id": 1}')
    recs = router.route_batch([by_id, by_pos, nowhere, broken])
    bridge = zone_partition("naresuan-bridge", N)
    assert [(r.partition, r.key) for r in recs] == [
        (bridge, b"naresuan-bridge"), (bridge, b"naresuan-bridge"), (1, b"y"), (1, b"z")]
    assert [read_origin(m).kind for m in as_consumed(recs)] == ["report"] * 4
    # Mixed with a reading of the same zone in one fetch, in order.
    reading = router.route(SourceMessage("sensors", 0, 9, T0, b"nb",
                                         orjson.dumps(occ("e1", "naresuan-bridge"))))
    pipe = Pipeline(ZONES)
    out = pipe.process_routed_batch(as_consumed(reading + recs), now_ms=T0 + 1000)
    assert out.events_in == 3
    alerts = [orjson.loads(r.value) for r in out.alerts]
    assert alerts
    assert {a["zone_id"] for a in alerts} == {"naresuan-bridge"}
    assert alerts[0]["level"] == "critical"
    dlq = dlq_of(out.dlq)
    assert [(d["reason"], d["source"]["topic"], d["source"]["offset"]) for d in dlq] == [
        ("unknown_zone", "reports", 2), ("schema", "reports", 3)]


@pytest.mark.kernels
def test_a_by_zone_record_without_origin_stands_for_itself() -> None:
    m = SourceMessage("by-zone", 2, 7, T0, b"k", b"nope", ((ORIGIN_HEADER, b"{garbage"),))
    o = read_origin(m)
    assert (o.kind, o.message, o.items) == ("sensor", m, None)
    (d,) = dlq_of(Pipeline(ZONES).process_routed_batch([m], T0).dlq)
    assert d["source"]["topic"] == "by-zone"
    assert d["source"]["offset"] == 7


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False,
                                                                            allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from(["wat-yai-vihara", "naresuan-bridge", "", "x" * 65]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["zone_id", "kind", "ts", "count", "event_id", "sensor_id", "lat",
                         "lon", "report_id", "category", "source"]) | st.text(max_size=4),
        inner, max_size=6),
    max_leaves=20)
values = st.one_of(
    st.none(), st.binary(max_size=64),
    json_values.map(orjson.dumps),
    st.lists(st.fixed_dictionaries(
        {"zone_id": st.sampled_from(["wat-yai-vihara", "naresuan-bridge", "q"])},
        optional={"count": st.integers(-5, 5), "kind": st.just("occupancy"),
                  "ts": st.integers(0, 2**45)}), min_size=1, max_size=6).map(orjson.dumps),
)
message = st.builds(
    SourceMessage, st.sampled_from(["sensors", "reports"]), st.integers(0, 40),
    st.integers(0, 2**40), st.none() | st.integers(-5, 2**42), st.none() | st.binary(max_size=8),
    values, st.lists(st.tuples(st.sampled_from(["a", UNDECODABLE_HEADER, ORIGIN_HEADER,
                                                ITEMS_HEADER]), st.binary(max_size=8)),
                     max_size=3).map(tuple))


@pytest.mark.kernels
@settings(max_examples=400, deadline=None)
@given(st.lists(message, min_size=1, max_size=6), st.integers(1, 9))
def test_fuzz_router_never_raises_never_drops_and_stage_two_digests_it(
    msgs: list[SourceMessage], n: int
) -> None:
    router = Router(ZONES, n, reports_topic="reports")
    for m in msgs:
        recs = router.route(m)
        assert recs
        for r in recs:
            assert 0 <= r.partition < n
            o = read_origin(as_consumed([r])[0])
            assert (o.message.topic, o.message.partition, o.message.offset, o.message.key,
                    tuple(o.message.headers)) == (m.topic, m.partition, m.offset, m.key,
                                                  tuple(m.headers))
        if len(recs) == 1:
            assert recs[0].value == m.value
        else:
            idx = sorted(i for r in recs for i in orjson.loads(dict(r.headers)[ITEMS_HEADER]))
            assert idx == list(range(len(orjson.loads(m.value or b""))))
    records = router.route_batch(msgs)
    out = Pipeline(ZONES).process_routed_batch(as_consumed(records), now_ms=T0)
    dlq_of(out.dlq)


class FakeBuilder:
    def __init__(self) -> None:
        self.records: list[tuple[int | None, bytes | None, bytes | None]] = []

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None,
               headers: Any) -> object:
        self.records.append((timestamp, key, value))
        return object()


class FakeProducer:
    """Records are acknowledged only when the test says so (``futures``)."""

    def __init__(self, expect: int = 6) -> None:
        self.sent: list[tuple[int, int | None, bytes | None]] = []  # partition, ts, key
        self.futures: list[asyncio.Future[Any]] = []
        self.expect = expect
        self.all_sent = asyncio.Event()  # the fetch's ``expect`` records

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(N))

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None,
                   partition: int, timestamp_ms: int | None, headers: Any
                   ) -> asyncio.Future[Any]:
        assert not (key is None and value is None), "Need at least one: key or value"  # aiokafka
        return self._record(partition, timestamp_ms, key)

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder()

    async def send_batch(self, builder: FakeBuilder, topic: str, *, partition: int
                         ) -> asyncio.Future[Any]:
        (ts, key, _), = builder.records
        return self._record(partition, ts, key)

    def _record(self, partition: int, timestamp_ms: int | None, key: bytes | None
                ) -> asyncio.Future[Any]:
        self.sent.append((partition, timestamp_ms, key))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        if len(self.futures) == self.expect:
            self.all_sent.set()
        return fut


def test_route_fetch_returns_only_once_every_record_is_acknowledged() -> None:
    sources = [SourceMessage("safetour.sensor-events.v1", 0, i, T0 + i, b"k", orjson.dumps(
        [occ(f"a{i}", "wat-yai-vihara"), occ(f"b{i}", "naresuan-bridge")])) for i in range(3)]

    async def scenario(fail: bool) -> None:
        producer = FakeProducer()
        zr = ZoneRouter(ZONES, Topics())
        task = asyncio.create_task(zr.route_fetch(producer, sources))
        await asyncio.wait_for(producer.all_sent.wait(), 5)
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()  # nothing acknowledged yet
        for f in producer.futures[:-1]:
            f.set_result(None)
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()  # one record of six still in flight
        if fail:
            producer.futures[-1].set_exception(KafkaError("broker said no"))
            with pytest.raises(RouteError, match="1 of 6"):
                await task
            return
        producer.futures[-1].set_result(None)
        result = await task
        assert (result.messages, result.records) == (3, 6)
        assert result.partitions == {zone_partition("wat-yai-vihara", N): 3,
                                     zone_partition("naresuan-bridge", N): 3}
        stamps: dict[int, list[int | None]] = {}
        for part, ts, _ in producer.sent:
            stamps.setdefault(part, []).append(ts)
        assert all(v == [T0, T0 + 1, T0 + 2] for v in stamps.values())

    asyncio.run(scenario(fail=False))
    asyncio.run(scenario(fail=True))


def test_an_undecodable_batch_is_routed_on_to_be_dead_lettered() -> None:
    # Its sentinel has neither key nor value, which aiokafka's send refuses (the router
    # agent crashed on it and the fetch was never acknowledged).
    sentinel = SourceMessage("safetour.sensor-events.v1", 0, 2, T0, None, None, (
        (UNDECODABLE_HEADER, b"Libraries for lz4 compression codec not found"),
        (UNDECODABLE_OFFSETS_HEADER, b"0-2")))
    good = SourceMessage("safetour.sensor-events.v1", 0, 3, T0, b"k",
                         orjson.dumps(occ("a3", "wat-yai-vihara")))

    async def scenario() -> None:
        producer = FakeProducer(expect=2)
        task = asyncio.create_task(ZoneRouter(ZONES, Topics()).route_fetch(
            producer, [sentinel, good]))
        await asyncio.wait_for(producer.all_sent.wait(), 5)
        for f in producer.futures:
            f.set_result(None)
        result = await task
        assert (result.messages, result.records) == (2, 2)

    asyncio.run(scenario())
