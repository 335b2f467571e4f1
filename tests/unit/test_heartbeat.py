"""Worker heartbeats (agents/heartbeat.py) and the rate-limited log of internal rejects."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from agents.heartbeat import (
    HeartbeatSnapshot,
    decode_heartbeat,
    heartbeat_record,
    run_heartbeat,
)
from agents.logs import ThrottledLog
from schemas import Rejection


def test_a_heartbeat_says_who_when_which_partitions_and_their_watermarks() -> None:
    value = heartbeat_record("host:12", [3, 0], {3: None, 0: 1771246794000}, 1771246805000)
    assert orjson.loads(value) == {
        "worker_id": "host:12", "ts": "2026-02-16T13:00:05.000Z", "partitions": [0, 3],
        "watermarks": {"0": "2026-02-16T12:59:54.000Z", "3": None}}
    assert decode_heartbeat(value) == orjson.loads(value)
    for bad in (None, b"", b"[1]", b'{"worker_id": "w"}', b'{"worker_id": 1, "ts": "t"}',
                b'{"worker_id": "w", "ts": "' + b"t" * 100_000 + b'"}'):
        assert isinstance(decode_heartbeat(bad), Rejection)


@pytest.mark.asyncio
async def test_the_loop_beats_until_stopped_and_survives_a_failed_send() -> None:
    stop = asyncio.Event()
    sent: list[tuple[bytes, bytes]] = []
    calls = 0

    async def send(key: bytes, value: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("broker gone for a moment")
        sent.append((key, value))
        if len(sent) == 3:
            stop.set()

    def snapshot() -> HeartbeatSnapshot:
        return HeartbeatSnapshot("w1", [1], {1: 1000})

    n = await asyncio.wait_for(run_heartbeat(send, 0.01, snapshot, stop, clock=lambda: 5.0),
                               10)
    assert (n, calls) == (3, 4)
    assert {k for k, _ in sent} == {b"w1"}
    assert orjson.loads(sent[0][1])["ts"] == "1970-01-01T00:00:05.000Z"
    with pytest.raises(ValueError, match="interval"):
        await run_heartbeat(send, 0, snapshot, stop)


def test_repeated_rejects_are_logged_once_per_10_s_with_the_count(
    caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    throttled = ThrottledLog(logging.getLogger("test.rejects"), clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.rejects"):
        logged = [throttled.note("bad %s", i) for i in range(5)]
        now[0] = 10.0
        logged.append(throttled.note("bad %s", 5))
    assert logged == [True, False, False, False, False, True]
    assert [r.getMessage() for r in caplog.records] == [
        "bad 0 (1 since the last such line)", "bad 5 (5 since the last such line)"]
