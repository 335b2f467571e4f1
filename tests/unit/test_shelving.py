"""Shelving (agents/delivery/shelving.py): bounded, recorded, ends by itself; it holds back a
zone's notifications below critical, never critical alerts or resolutions, and when it ends
each open episode held back is sent once."""

from __future__ import annotations

import logging

import orjson
import pytest

from agents.delivery.channels import ChannelRunner
from agents.delivery.notify import MemoryNotifier, RetryPolicy, Route
from agents.delivery.shelving import parse_duration, shelf_record, suppressed
from agents.metrics import Metrics
from agents.rejects import InternalRejects
from agents.shelves import Shelves
from schemas import SafetourError

from .test_channels import NOW, P0, alert, poll, resolution, running, stopped

MS = int(NOW * 1000)


def test_durations_are_bounded_and_bad_ones_say_why() -> None:
    assert parse_duration("30m") == 1800
    assert parse_duration("45s") == parse_duration("45") == 45
    assert parse_duration("4h") == 4 * 3600
    for bad in ("", "soon", "-5m", "0m", "4.1h", "5h"):
        with pytest.raises(SafetourError):
            parse_duration(bad)
    with pytest.raises(SafetourError, match="reason"):
        shelf_record("z1", action="shelve", by="somchai", now_s=NOW, for_s=60, reason=" ")


def test_a_shelf_holds_until_its_end_and_ends_by_itself() -> None:
    shelves = Shelves()
    rec = shelf_record("z1", action="shelve", by="somchai", now_s=NOW, for_s=60,
                       reason="rehearsal")
    assert rec["until"] != rec["at"]
    assert rec["by"] == "somchai"
    assert shelves.apply(orjson.dumps(rec), ts_ms=MS, now_s=NOW) is None
    assert shelves.active("z1", NOW + 59) is not None
    assert shelves.active("z1", NOW + 60) is None  # over, with no command
    assert shelves.active("z2", NOW) is None
    assert [s.reason for s in shelves.listing(NOW)] == ["rehearsal"]
    shelves.apply(orjson.dumps(shelf_record("z1", action="unshelve", by="nok", now_s=NOW)),
                  ts_ms=MS, now_s=NOW)
    assert shelves.active("z1", NOW) is None
    assert shelves.apply(b"not json", ts_ms=MS, now_s=NOW) is not None
    assert shelves.apply(orjson.dumps({"zone_id": "z1", "action": "nap"}), ts_ms=MS,
                         now_s=NOW) is not None
    # A time that is no time is a bad record too (it once escaped as schemas' own error and
    # ended the notifier's shelves follower: shelving off).
    assert "/until" in str(shelves.apply(orjson.dumps(rec | {"until": "tomorrow"}), ts_ms=MS,
                                        now_s=NOW))
    # Written by hand for a day: it holds at most 4 h.
    long = rec | {"until": "2099-01-01T00:00:00Z"}
    shelves.apply(orjson.dumps(long), ts_ms=MS, now_s=NOW)
    assert shelves.active("z1", NOW + 4 * 3600 - 1) is not None
    assert shelves.active("z1", NOW + 4 * 3600) is None


def test_critical_alerts_and_resolutions_are_never_held_back() -> None:
    shelves = Shelves()
    shelves.apply(orjson.dumps(shelf_record("z1", action="shelve", by="a", now_s=NOW,
                                            for_s=600, reason="r")), ts_ms=MS, now_s=NOW)
    assert suppressed(alert(1, "high"), shelves, NOW) is not None
    assert suppressed(alert(1, "critical"), shelves, NOW) is None
    assert suppressed(resolution(1, 3), shelves, NOW) is None
    assert suppressed(alert(1, "high", zone="z2"), shelves, NOW) is None


@pytest.mark.asyncio
async def test_the_runner_holds_back_a_shelved_zone_and_sends_its_open_episode_at_the_end(
) -> None:
    clock = [NOW]

    async def dead_letter(key: bytes | None, value: bytes) -> None:
        raise AssertionError("nothing is dead-lettered")

    twin = MemoryNotifier()
    metrics = Metrics()
    shelves = Shelves()
    r = ChannelRunner(twin, Route("elevated"), RetryPolicy(base_s=0.01, cap_s=0.05),
                      dead_letter, metrics, InternalRejects.of("notify-t", metrics,
                                                               logging.getLogger("t")),
                      senders=1, wall_clock=lambda: clock[0], shelves=shelves)
    shelves.apply(orjson.dumps(shelf_record("z1", action="shelve", by="a", now_s=NOW,
                                            for_s=30, reason="rehearsal")), ts_ms=MS, now_s=NOW)
    tasks = await running(r)
    records = [alert(1, "elevated", seq=1), alert(1, "high", seq=2, status="escalated"),
               alert(2, "critical", seq=1, zone="z1"), alert(3, "high", seq=1, zone="z2")]
    for off, a in enumerate(records):
        await r.accept(P0, off, a["zone_id"].encode(), orjson.dumps(a))
    await poll(lambda: r.queue.held == 0)
    assert sorted(twin.delivered) == ["z1:2:ab:1", "z2:3:ab:1"]  # critical, other zone
    assert r.shelved == 2
    assert r.book.committable() == {P0: len(records)}
    assert await r.release_unshelved() == 0  # still shelved
    clock[0] = NOW + 31  # the shelf is over by itself
    assert await r.release_unshelved() == 1
    await poll(lambda: "z1:1:ab:2" in twin.delivered)
    assert twin.delivered["z1:1:ab:2"]["unshelved"] is True
    assert await r.release_unshelved() == 0  # once
    await r.accept(P0, 4, b"z1", orjson.dumps(alert(1, "elevated", seq=3,
                                                    status="deescalated")))
    await poll(lambda: "z1:1:ab:3" in twin.delivered)
    await stopped(tasks)


@pytest.mark.asyncio
async def test_a_restart_during_a_shelf_rebuilds_what_it_held_back_and_sends_it_at_the_end(
) -> None:
    """The restarted runner reads the finished records again without sending (catch_up):
    a record of a shelved zone whose Kafka timestamp falls in the shelf was held back, so at
    the end of the shelf its open episode is sent once, marked ``unshelved``; an episode
    resolved, one whose newest record went out (critical) and one of before the shelf are
    not."""
    clock = [NOW + 10]

    async def dead_letter(key: bytes | None, value: bytes) -> None:
        raise AssertionError("nothing is dead-lettered")

    twin = MemoryNotifier()
    metrics = Metrics()
    shelves = Shelves()
    shelves.apply(orjson.dumps(shelf_record("z1", action="shelve", by="a", now_s=NOW,
                                            for_s=30, reason="rehearsal")), ts_ms=MS, now_s=NOW)
    r = ChannelRunner(twin, Route("elevated"), RetryPolicy(), dead_letter, metrics,
                      InternalRejects.of("notify-t", metrics, logging.getLogger("t")),
                      senders=1, wall_clock=lambda: clock[0], shelves=shelves)
    ms = int(NOW * 1000)
    before = [(alert(1, "elevated", seq=1), ms + 1000),  # held back
              (alert(1, "high", seq=2, status="escalated"), ms + 2000),  # held back: newest
              (alert(2, "elevated", seq=1), ms + 3000),  # held back, then it went critical
              (alert(2, "critical", seq=2, status="escalated"), ms + 4000),
              (alert(3, "high", seq=1), ms + 5000),  # held back, then resolved
              (resolution(3, 2), ms + 6000),
              (alert(4, "high", seq=1), ms - 5000)]  # before the shelf: it went out
    r.catch_up(P0, len(before))
    tasks = await running(r)
    for off, (a, ts) in enumerate(before):
        assert not await r.accept(P0, off, b"z1", orjson.dumps(a), ts)
    assert twin.delivered == {}
    assert await r.release_unshelved() == 0  # still shelved
    clock[0] = NOW + 31
    assert await r.release_unshelved() == 1
    await poll(lambda: "z1:1:ab:2" in twin.delivered)
    assert twin.delivered["z1:1:ab:2"]["unshelved"] is True
    assert await r.release_unshelved() == 0  # once
    await poll(lambda: r.queue.held == 0)
    assert list(twin.delivered) == ["z1:1:ab:2"]
    await stopped(tasks)


def test_shelves_remember_when_they_held() -> None:
    """held_at: a shelf held from its ``at`` to its ``until``, or to the zone's next record
    (an unshelve, a new shelf)."""
    shelves = Shelves()
    ms = int(NOW * 1000)
    shelves.apply(orjson.dumps(shelf_record("z1", action="shelve", by="a", now_s=NOW,
                                            for_s=60, reason="r")), ts_ms=MS, now_s=NOW)
    shelves.apply(orjson.dumps(shelf_record("z1", action="unshelve", by="b", now_s=NOW + 20)),
                  ts_ms=MS + 20_000, now_s=NOW + 20)
    shelves.apply(orjson.dumps(shelf_record("z1", action="shelve", by="a", now_s=NOW + 100,
                                            for_s=10, reason="r")),
                  ts_ms=MS + 100_000, now_s=NOW + 100)
    assert not shelves.held_at("z1", ms - 1)
    assert shelves.held_at("z1", ms)
    assert shelves.held_at("z1", ms + 19_999)
    assert not shelves.held_at("z1", ms + 20_000)  # unshelved
    assert not shelves.held_at("z1", ms + 99_999)
    assert shelves.held_at("z1", ms + 105_000)
    assert not shelves.held_at("z1", ms + 110_000)  # ended by itself
    assert not shelves.held_at("z2", ms + 5_000)


def test_the_commands_refuse_bad_input_with_exit_2() -> None:
    """A SafetourError is what `safetour` turns into exit 2 with its message."""
    from agents.cli import build_parser, cmd_shelve  # noqa: PLC0415
    from agents.config import Settings  # noqa: PLC0415

    parser = build_parser()
    with pytest.raises(SafetourError, match="at most 4 h"):
        cmd_shelve(parser.parse_args(["shelve", "night-bazaar", "--for", "5h", "--reason",
                                      "x"]), Settings.from_env({}))
    with pytest.raises(SafetourError, match="unknown zone"):
        cmd_shelve(parser.parse_args(["shelve", "no-such-zone", "--for", "5m", "--reason",
                                      "x"]), Settings.from_env({}))
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["shelve", "night-bazaar", "--for", "5m"])
    assert exc.value.code == 2


@pytest.mark.asyncio
async def test_alerts_held_back_by_a_shelf_are_counted_per_channel() -> None:
    """safetour_notify_shelved_total{channel}: what a shelf held back, never a critical alert
    or another zone's (README "Metrics")."""
    from prometheus_client import generate_latest  # noqa: PLC0415

    async def dead_letter(key: bytes | None, value: bytes) -> None:
        raise AssertionError("nothing is dead-lettered")

    metrics = Metrics()
    shelves = Shelves()
    r = ChannelRunner(MemoryNotifier(), Route("elevated"), RetryPolicy(), dead_letter, metrics,
                      InternalRejects.of("notify-t", metrics, logging.getLogger("t")),
                      senders=1, wall_clock=lambda: NOW, shelves=shelves)
    shelves.apply(orjson.dumps(shelf_record("z1", action="shelve", by="a", now_s=NOW,
                                            for_s=30, reason="rehearsal")), ts_ms=MS, now_s=NOW)
    records = [alert(1, "elevated", seq=1), alert(1, "high", seq=2, status="escalated"),
               alert(2, "critical", seq=1, zone="z1"), alert(3, "high", seq=1, zone="z2")]
    for off, a in enumerate(records):
        await r.accept(P0, off, a["zone_id"].encode(), orjson.dumps(a))
    sample = metrics.registry.get_sample_value("safetour_notify_shelved_total",
                                               {"channel": r.channel})
    assert sample == 2 == r.shelved
    assert f'safetour_notify_shelved_total{{channel="{r.channel}"}} 2.0' in \
        generate_latest(metrics.registry).decode()


def test_the_commands_print_until_in_bangkok_time_and_record_utc(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """People read Bangkok time (UTC+7, ICT): ``safetour shelve`` and ``safetour shelves``
    print it; the record on the topic stays in UTC."""
    from agents import delivery  # noqa: PLC0415
    from agents.cli import build_parser, cmd_shelve, cmd_shelves  # noqa: PLC0415
    from agents.config import Settings  # noqa: PLC0415

    at_s = 1771246800.0  # 2026-02-16T13:00:00Z = 20:00 ICT
    monkeypatch.setattr("agents.cli.time.time", lambda: at_s)
    published: list[dict[str, object]] = []

    async def publish(kafka: object, topic: str, record: dict[str, object]) -> None:
        published.append(record)

    monkeypatch.setattr(delivery, "publish_shelf", publish)
    parser = build_parser()
    settings = Settings.from_env({})
    cmd_shelve(parser.parse_args(["shelve", "night-bazaar", "--for", "90m", "--reason",
                                  "rehearsal", "--by", "somchai"]), settings)
    assert published[0]["until"] == "2026-02-16T14:30:00.000Z"  # UTC on the topic
    said = capsys.readouterr().out
    assert "until 21:30 ICT, 16 Feb 2026" in said
    assert "14:30" not in said

    async def read(kafka: object, topic: str) -> Shelves:
        shelves = Shelves()
        shelves.apply(orjson.dumps(published[0]), ts_ms=int(at_s * 1000), now_s=at_s)
        return shelves

    monkeypatch.setattr(delivery, "read_shelves", read)
    cmd_shelves(parser.parse_args(["shelves"]), settings)
    row = capsys.readouterr().out
    assert row.strip() == ("night-bazaar  until 21:30 ICT, 16 Feb 2026  by somchai "
                           "(since 20:00 ICT, 16 Feb 2026): rehearsal")
    cmd_shelves(parser.parse_args(["shelves", "--json"]), settings)
    assert orjson.loads(capsys.readouterr().out)["until"] == "2026-02-16T14:30:00.000Z"


def test_a_shelf_whose_at_is_ahead_of_its_record_timestamp_is_refused() -> None:
    """Issue 15: ``at`` a year ahead held a silent shelf from then on, for 4 h; the record is
    judged by its Kafka timestamp, so it is refused (and so is a timestamp ahead of the
    reader's clock: the topic is CreateTime, the writer sets it)."""
    year = 365 * 86400
    shelves = Shelves()
    ahead = shelf_record("z1", action="shelve", by="a", now_s=NOW + year, for_s=3600,
                         reason="later")
    said = shelves.apply(orjson.dumps(ahead), ts_ms=MS, now_s=NOW)
    assert said is not None
    assert "/at" in said
    assert "ahead" in said
    assert shelves.bad == 1
    assert shelves.active("z1", NOW + year + 60) is None
    assert not shelves.held_at("z1", MS + year * 1000 + 60_000)
    stamped = shelves.apply(orjson.dumps(ahead), ts_ms=MS + year * 1000, now_s=NOW)
    assert stamped is not None
    assert "clock" in stamped
    assert shelves.active("z1", NOW + year + 60) is None
    # Within the clock skew allowed it holds, from its timestamp at the latest.
    skewed = shelf_record("z1", action="shelve", by="a", now_s=NOW + 50, for_s=60,
                          reason="skew")
    assert shelves.apply(orjson.dumps(skewed), ts_ms=MS, now_s=NOW) is None
    assert shelves.active("z1", NOW) is not None
    assert shelves.held_at("z1", MS)


def test_a_shelf_ends_at_most_4_h_after_its_record_timestamp_whatever_until_says() -> None:
    shelves = Shelves()
    rec = shelf_record("z1", action="shelve", by="a", now_s=NOW + 59, for_s=60, reason="r")
    far = rec | {"until": "2099-01-01T00:00:00Z"}
    assert shelves.apply(orjson.dumps(far), ts_ms=MS, now_s=NOW) is None
    assert shelves.active("z1", NOW + 4 * 3600 - 1) is not None
    assert shelves.active("z1", NOW + 4 * 3600) is None  # not at + 4 h: 59 s later
    assert not shelves.held_at("z1", MS + 4 * 3600 * 1000)
    # An unshelve written ahead of its timestamp ends the shelf when it was written.
    shelves.apply(orjson.dumps(far), ts_ms=MS, now_s=NOW)
    off = shelf_record("z1", action="unshelve", by="b", now_s=NOW + 3600)
    assert shelves.apply(orjson.dumps(off), ts_ms=MS + 10_000, now_s=NOW + 10) is None
    assert not shelves.held_at("z1", MS + 10_000)
