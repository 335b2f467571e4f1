"""Over the real broker: `safetour shelve` records a shelf, `safetour shelves` shows it, the
notifier holds back the zone's high alert but not its critical one, and when the short shelf
ends by itself the held-back episode is sent."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.cli import build_parser, cmd_shelve, cmd_shelves
from agents.config import Settings
from agents.delivery.channel_consumer import run_notify
from agents.delivery.channels import ChannelRunner
from agents.delivery.notify import MemoryNotifier, RetryPolicy, Route
from agents.topics import create_topics, topic_specs

from .conftest import make_settings, payloads, settings_env
from .test_recovery import publish


def _alert(n: int, level: str) -> dict[str, Any]:
    return {"alert_id": f"night-bazaar:{n}:x", "zone_id": "night-bazaar", "level": level,
            "previous_level": "normal", "status": "raised", "seq": 1,
            "ts": "2026-02-16T13:00:00.000Z", "message": {"th": "ท", "en": "e"}}


def test_a_shelf_is_recorded_listed_honoured_and_ends_by_itself(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    for k, v in settings_env(s).items():
        monkeypatch.setenv(k, v)
    def main(argv: list[str]) -> int:
        args = build_parser().parse_args(argv)
        cmd = cmd_shelves if argv[0] == "shelves" else cmd_shelve
        return cmd(args, Settings.from_env())

    assert main(["shelve", "night-bazaar", "--for", "4s", "--reason", "stage rehearsal",
                 "--by", "somchai"]) == 0
    shelved_at = time.monotonic()
    (rec,) = payloads(kafka, s.topics.shelves)
    assert rec["zone_id"] == "night-bazaar"
    assert rec["by"] == "somchai"
    assert rec["reason"] == "stage rehearsal"
    assert rec["until"] > rec["at"]
    capsys.readouterr()
    assert main(["shelves"]) == 0
    assert "night-bazaar" in capsys.readouterr().out
    asyncio.run(publish(kafka, s.topics.alerts, [
        (b"night-bazaar", orjson.dumps(_alert(1, "high"))),
        (b"night-bazaar", orjson.dumps(_alert(2, "critical")))]))

    async def serve() -> MemoryNotifier:
        twin, stop, runners = MemoryNotifier(), asyncio.Event(), list[ChannelRunner]()
        task = asyncio.create_task(run_notify(s, lambda session: twin, "memory",
                                              Route("elevated"), RetryPolicy(), stop,
                                              grace_s=1.0, on_runner=runners.append))
        deadline = time.monotonic() + 30
        while "night-bazaar:1:x:1" not in twin.delivered:
            assert time.monotonic() < deadline, sorted(twin.delivered)
            assert not task.done()
            if "night-bazaar:2:x:1" in twin.delivered and time.monotonic() - shelved_at < 3:
                assert "night-bazaar:1:x:1" not in twin.delivered  # held back meanwhile
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 15)
        assert runners[0].shelved == 1
        return twin

    twin = asyncio.run(serve())
    assert "night-bazaar:2:x:1" in twin.delivered  # critical went through the shelf
    assert twin.delivered["night-bazaar:1:x:1"]["unshelved"] is True
    capsys.readouterr()
    assert main(["shelves"]) == 0
    assert "no zone is shelved" in capsys.readouterr().out


def test_a_notifier_restarted_during_a_shelf_sends_the_held_back_episode_when_it_ends(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first notifier holds the high alert back and commits past it; a second one,
    started while the shelf holds, rebuilds that from the alerts topic and, when the shelf
    ends by itself, sends the episode once, marked ``unshelved``."""
    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    for k, v in settings_env(s).items():
        monkeypatch.setenv(k, v)
    args = build_parser().parse_args(["shelve", "night-bazaar", "--for", "20s", "--reason",
                                      "stage rehearsal", "--by", "somchai"])
    assert cmd_shelve(args, Settings.from_env()) == 0
    shelved_at = time.monotonic()
    asyncio.run(publish(kafka, s.topics.alerts, [
        (b"night-bazaar", orjson.dumps(_alert(1, "high"))),
        (b"night-bazaar", orjson.dumps(_alert(3, "elevated")))]))

    async def serve(twin: MemoryNotifier, done: Any) -> ChannelRunner:
        stop, runners = asyncio.Event(), list[ChannelRunner]()
        task = asyncio.create_task(run_notify(s, lambda session: twin, "memory",
                                              Route("elevated"), RetryPolicy(), stop,
                                              grace_s=1.0, on_runner=runners.append))
        deadline = time.monotonic() + 40
        while not (runners and done(runners[0]) and runners[0].queue.held == 0
                   and not runners[0].book.committable()):
            assert time.monotonic() < deadline, sorted(twin.delivered)
            assert not task.done()
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 15)
        return runners[0]

    first = MemoryNotifier()
    held = asyncio.run(serve(first, lambda r: r.shelved == 2))
    assert first.delivered == {}  # both held back, and committed
    assert held.book.committable() == {}
    asyncio.run(publish(kafka, s.topics.alerts, [  # episode 3 resolves during the shelf
        (b"night-bazaar", orjson.dumps(_alert(3, "normal") | {
            "status": "resolved", "previous_level": "elevated", "seq": 2}))]))
    assert time.monotonic() - shelved_at < 20, "the first run outlasted the shelf"
    again = MemoryNotifier()
    asyncio.run(serve(again, lambda r: "night-bazaar:1:x:1" in again.delivered))
    assert time.monotonic() - shelved_at >= 19  # not before the shelf ended
    assert again.delivered["night-bazaar:1:x:1"]["unshelved"] is True
    assert sorted(again.delivered) == ["night-bazaar:1:x:1", "night-bazaar:3:x:2"]
    assert "unshelved" not in again.delivered["night-bazaar:3:x:2"]
