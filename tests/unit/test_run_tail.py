"""`safetour run`'s live alert view: when it fails (Kafka slow to answer), one line says so
and the demo goes on; no traceback at shutdown."""

from __future__ import annotations

import asyncio

import pytest

from agents.kafka import KafkaUnreachable
from agents.run import _tail_stopped


def test_a_failed_alert_view_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    async def tail() -> int:
        raise KafkaUnreachable("cannot reach Kafka at 127.0.0.1:1: no answer within 15s")

    async def go() -> None:
        task = asyncio.create_task(tail())
        task.add_done_callback(_tail_stopped)
        await asyncio.wait([task])
        await asyncio.sleep(0)  # the callback runs

    asyncio.run(go())
    err = capsys.readouterr()
    text = err.out + err.err
    assert "the live alert view stopped: cannot reach Kafka" in text
    assert "Traceback" not in text


def test_a_view_that_ended_or_was_cancelled_says_nothing(
    capsys: pytest.CaptureFixture[str]
) -> None:
    async def go() -> None:
        done = asyncio.create_task(asyncio.sleep(0, result=3))
        done.add_done_callback(_tail_stopped)
        hung = asyncio.create_task(asyncio.sleep(60))
        hung.add_done_callback(_tail_stopped)
        await done
        hung.cancel()
        await asyncio.wait([hung])
        await asyncio.sleep(0)

    asyncio.run(go())
    err = capsys.readouterr()
    assert "alert view" not in err.out + err.err
