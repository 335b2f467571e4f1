"""``safetour alerts tail`` prints every alert of the open contract and stops at ``--max``."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from agents import tail
from agents.kafka import KafkaConfig
from agents.tail import format_alert, tail_alerts

BASE: dict[str, Any] = {
    "alert_id": "a1", "zone_id": "stage", "level": "high", "status": "raised",
    "density": 3.7, "occupancy": 370, "window_start": "2026-02-15T12:29:00Z",
    "window_end": "2026-02-15T12:30:00Z", "ts": "2026-02-15T12:30:00Z",
    "message": {"th": "หนาแน่น", "en": "crowded"}, "reason": "density",
}

SHAPES: dict[str, dict[str, Any]] = {
    "density": BASE,
    "report, density null": BASE | {"reason": "report", "density": None, "occupancy": None},
    "sensing_lost, density null": BASE | {"status": "updated", "reason": "sensing_lost",
                                          "density": None, "occupancy": None, "seq": 3},
    "seq present": BASE | {"seq": 2},
    "an unknown reason and extra fields": BASE | {"reason": "drone", "x-vendor": {"a": [1]},
                                                  "future_field": None},
    "density missing": {k: v for k, v in BASE.items() if k != "density"},
    "fields of other types": BASE | {"density": "3.7", "eta_critical_s": "soon",
                                     "message": "crowded", "zone_id": None, "status": None,
                                     "seq": "2", "ts": 7, "reminder": "yes"},
    "almost empty": {"level": "critical"},
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_alert_shape_prints(shape: str) -> None:
    text = format_alert(SHAPES[shape], colour=False)
    first = text.splitlines()[0]
    assert len(text.splitlines()) == 3
    assert first.split()[1] == "ICT"
    assert "p/m²" in first


def test_a_null_density_shows_as_no_number_with_its_reason_and_seq() -> None:
    line = format_alert(SHAPES["sensing_lost, density null"], colour=False).splitlines()[0]
    assert line.endswith("    -- p/m²  [sensing_lost]  #3"), line
    line = format_alert(SHAPES["report, density null"], colour=False).splitlines()[0]
    assert line.endswith("    -- p/m²  [report]"), line
    line = format_alert(SHAPES["seq present"], colour=False).splitlines()[0]
    assert line.endswith("  3.70 p/m²  #2"), line
    line = format_alert(SHAPES["density"], colour=False).splitlines()[0]
    assert line.endswith("  3.70 p/m²"), line


class _Rec:
    def __init__(self, value: bytes | None) -> None:
        self.value = value


class _FakeConsumer:
    """One fetch holding every record, then nothing."""

    def __init__(self, values: list[bytes | None]) -> None:
        self.fetches = [{TopicPartition("t", 0): [_Rec(v) for v in values]}]

    def assign(self, tps: list[TopicPartition]) -> None:
        pass

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(self, timeout_ms: int = 0) -> Mapping[TopicPartition, list[_Rec]]:
        if self.fetches:
            return self.fetches.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}


def _tail(monkeypatch: pytest.MonkeyPatch, values: list[bytes | None], **kw: Any) -> list[str]:
    consumer = _FakeConsumer(values)

    async def parts(kafka: object, topic: str) -> list[int]:
        return [0]

    async def start(self: KafkaConfig, client: object) -> None:
        pass

    monkeypatch.setattr(tail, "partitions_of", parts)
    monkeypatch.setattr(KafkaConfig, "consumer", lambda self, **_: consumer)
    monkeypatch.setattr(KafkaConfig, "start", start)
    out = io.StringIO()
    seen: list[dict[str, Any]] = []
    n = asyncio.run(tail_alerts(KafkaConfig("h:1"), "t", from_beginning=True, out=out,
                                on_alert=seen.append, **kw))
    assert n == len(seen)
    return out.getvalue().splitlines()


def test_max_1_prints_one_alert_of_a_fetch_of_several(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [orjson.dumps(BASE | {"alert_id": f"a{i}"}) for i in range(3)]
    lines = _tail(monkeypatch, list(values), max_alerts=1, as_json=True)
    assert [orjson.loads(ln)["alert_id"] for ln in lines] == ["a0"]
    lines = _tail(monkeypatch, list(values), max_alerts=2, as_json=True)
    assert [orjson.loads(ln)["alert_id"] for ln in lines] == ["a0", "a1"]


def test_tail_prints_every_shape_and_skips_what_is_no_alert(
        monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[bytes | None] = [b"not json", None, b"[1]"]
    values += [orjson.dumps(SHAPES[s]) for s in sorted(SHAPES)]
    lines = _tail(monkeypatch, values, max_alerts=len(SHAPES), timeout_s=5)
    assert len(lines) == 3 * len(SHAPES)
    # two nulls, one missing, one a string, and the almost empty one
    assert sum("-- p/m²" in ln for ln in lines) == 5
