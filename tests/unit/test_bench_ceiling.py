"""The ceiling rows of the benchmark, on a fake consumer and producer (no broker)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from benchmarks import ceiling_io, e2e
from benchmarks.ceiling_io import Captured
from benchmarks.e2e import Progress


@dataclass
class _Rec:
    value: bytes


class FakeConsumer:
    """Serves ``TOPIC``'s messages, a few of each partition per ``getmany``."""

    topic: dict[int, list[bytes]] = {}  # noqa: RUF012 (set per test)

    def __init__(self, **kwargs: Any) -> None:
        self.pos = dict.fromkeys(self.topic, 0)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, tps: Any) -> None: ...

    async def seek_to_beginning(self, *tps: Any) -> None: ...

    async def getmany(self, timeout_ms: int = 0, max_records: int = 0) -> dict[Any, list[_Rec]]:
        out = {}
        for p, msgs in self.topic.items():
            i = self.pos[p]
            if i < len(msgs):
                out[p] = [_Rec(v) for v in msgs[i:i + 3]]
                self.pos[p] = i + 3
        return out


@dataclass
class FakeBuilder:
    cap: int = 4
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes,
               headers: Any) -> object | None:
        if len(self.records) == self.cap:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    sent: list[tuple[str, int, bytes | None, bytes]] = []  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder()

    @staticmethod
    def _done() -> asyncio.Future[None]:
        f: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        f.set_result(None)
        return f

    async def send_batch(self, b: FakeBuilder, topic: str, *, partition: int) -> Any:
        self.sent += [(topic, partition, k, v) for k, v in b.records]
        return self._done()

    async def send(self, topic: str, value: bytes, *, key: bytes | None, partition: int,
                   headers: Any) -> Any:
        self.sent.append((topic, partition, key, value))
        return self._done()


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    async def partitions_of(bootstrap: str, topic: str) -> list[int]:
        return sorted(FakeConsumer.topic)

    async def ensure_topic(bootstrap: str, name: str, partitions: int = 8) -> None: ...

    for mod in (e2e, ceiling_io):
        monkeypatch.setattr(mod, "AIOKafkaConsumer", FakeConsumer)
        monkeypatch.setattr(mod, "partitions_of", partitions_of)
    monkeypatch.setattr(ceiling_io, "AIOKafkaProducer", FakeProducer)
    monkeypatch.setattr(ceiling_io, "ensure_topic", ensure_topic)
    FakeProducer.sent = []
    # 4 partitions of 10 batches of 5 readings (200 readings in 40 messages).
    FakeConsumer.topic = {p: [orjson.dumps([{"i": j}] * 5) for j in range(10)]
                          for p in range(4)}


@pytest.mark.usefixtures("fakes")
def test_ceiling_reads_every_message_of_every_partition() -> None:
    readings, seconds = asyncio.run(e2e.ceiling("b", "t", 40))
    assert readings == 200
    assert seconds >= 0


def _captured(n: int) -> list[Captured]:
    # Density records of two partitions, windows 1 s apart, and one alert between them.
    out = [Captured("d", i % 2, f"z{i}".encode(), orjson.dumps({"n": i}), (), 100 + i,
                    1000 * (i + 1)) for i in range(n)]
    out.insert(3, Captured("a", 0, b"z", b"alert", (("h", b"1"),), 102, None))
    return out


def test_plan_orders_by_due_reading_and_keeps_partition_order() -> None:
    progress = Progress.of([500 * k for k in range(40)], grace_ms=0)  # 2 readings a second
    recs = _captured(6)
    p = ceiling_io.plan(recs, progress, 40, {"d": 2, "a": 1})
    # The window ending at 1000 ms is due once a reading at >= 1000 ms was read: the 3rd.
    assert p.due[0] == 2
    assert p.due == sorted(p.due)
    # The alert, appended with the 3rd density record (ts 102), is due with it.
    alert = p.records.index(recs[3])
    assert p.due[alert] == p.due[p.records.index(recs[2])]
    for part in (0, 1):
        mine = [r for r in p.records if (r.topic, r.partition) == ("d", part)]
        assert mine == [r for r in recs if (r.topic, r.partition) == ("d", part)]


@pytest.mark.usefixtures("fakes")
@pytest.mark.parametrize("mode", ceiling_io.MODES)
def test_io_ceiling_produces_every_planned_record_once_on_its_partition(mode: str) -> None:
    progress = Progress.of(list(range(0, 200_000, 1000)), grace_ms=0)
    recs = _captured(30)
    planned = ceiling_io.plan(recs, progress, 200, {"d": 2, "a": 1})
    readings, _, produced = asyncio.run(ceiling_io.io_ceiling("b", "t", 40, planned,
                                                              mode=mode))
    assert readings == 200
    assert produced == len(recs)
    got = sorted((t.rsplit(".io-", 1)[0], p, k, v) for t, p, k, v in FakeProducer.sent)
    assert got == sorted(("t", r.partition, r.key, r.value) for r in recs)
    names = {t for t, *_ in FakeProducer.sent}
    assert len(names) == 2  # a topic of its own per captured topic


def test_report_has_the_ratio_to_the_io_ceiling_for_both_shapes() -> None:
    from types import SimpleNamespace  # noqa: PLC0415

    from benchmarks.__main__ import Results  # noqa: PLC0415
    from benchmarks.report import ratio_rows  # noqa: PLC0415

    res = Results()
    for system, single, batch in (("ceiling", 100.0, 400.0), ("io-ceiling", 40.0, 80.0),
                                  ("safetour", 10.0, 60.0)):
        res.add(system, "single", single)
        res.add(system, "batch100", batch)
    rows = dict(ratio_rows(SimpleNamespace(res=res)))  # type: ignore[arg-type]
    assert rows["safetour / I/O ceiling"] == ["0.25x", "0.75x"]
    assert rows["safetour / ceiling"] == ["0.10x", "0.15x"]
    assert "safetour / faust-native" not in rows  # not run: no row
