"""The dashboard shows operators' shelves (agents/shelves.py records) and each zone's density
confidence: the board's state, its events, and what it does with bad records."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
import pytest

from agents.config import repo_root
from agents.dashboard.board import Board
from agents.dashboard.follower import apply_records
from agents.metrics import Metrics
from agents.rejects import InternalRejects
from schemas import format_ts, load_zones

from .test_dashboard import TOKEN, _no_publish, read_events, serving

NOW = 1_771_247_000.0
ZONE = "night-bazaar"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def shelve(zone: str = ZONE, *, at_s: float = NOW, for_s: float = 600, by: str = "somchai",
           reason: str = "stage rehearsal") -> bytes:
    return orjson.dumps({"zone_id": zone, "action": "shelve", "by": by,
                         "at": format_ts(int(at_s * 1000)),
                         "until": format_ts(int((at_s + for_s) * 1000)), "reason": reason})


def unshelve(zone: str = ZONE, *, at_s: float = NOW) -> bytes:
    at = format_ts(int(at_s * 1000))
    return orjson.dumps({"zone_id": zone, "action": "unshelve", "by": "malee", "at": at,
                         "until": at, "reason": ""})


def new_board(clock: Clock) -> Board:
    return Board(load_zones(repo_root() / "deploy/zones/phitsanulok.yaml"), clock=clock)


def zone_state(b: Board, zone: str = ZONE) -> dict[str, Any]:
    [z] = [z for z in orjson.loads(b.state())["zones"] if z["zone_id"] == zone]
    return dict(z)


def events(q: asyncio.Queue[tuple[Any, str, bytes]], kind: str) -> list[Any]:
    out = []
    while not q.empty():
        _, k, data = q.get_nowait()
        if k == kind:
            out.append(orjson.loads(data))
    return out


def test_a_shelf_shows_until_its_end_and_then_goes_by_itself() -> None:
    clock = Clock()
    b = new_board(clock)
    assert zone_state(b)["shelf"] is None
    with b.subscribe() as q:
        assert apply_records(b, "shelf", [shelve(for_s=600)]) == 0
        assert zone_state(b)["shelf"] == {
            "zone_id": ZONE, "by": "somchai", "reason": "stage rehearsal",
            "at": format_ts(int(NOW * 1000)), "until": format_ts(int((NOW + 600) * 1000))}
        assert zone_state(b, "naresuan-bridge")["shelf"] is None
        [ev] = events(q, "shelf")
        assert ev["zone_id"] == ZONE
        assert ev["shelf"]["until"] == format_ts(int((NOW + 600) * 1000))

        clock.now = NOW + 599
        b.expire_shelves()
        assert events(q, "shelf") == []  # still on: nothing to say
        assert zone_state(b)["shelf"] is not None

        clock.now = NOW + 600  # over at `until`, with no record
        assert zone_state(b)["shelf"] is None
        b.expire_shelves()
        b.expire_shelves()
        assert events(q, "shelf") == [{"zone_id": ZONE, "shelf": None}]  # said once


def test_an_unshelve_record_ends_the_shelf_at_once() -> None:
    clock = Clock()
    b = new_board(clock)
    with b.subscribe() as q:
        apply_records(b, "shelf", [shelve(for_s=3600)])
        clock.now = NOW + 60
        apply_records(b, "shelf", [unshelve(at_s=NOW + 60)])
        assert zone_state(b)["shelf"] is None
        assert [e["shelf"] is None for e in events(q, "shelf")] == [False, True]
        b.expire_shelves()
        assert events(q, "shelf") == []


def test_a_shelf_replayed_at_start_that_already_ended_is_not_shown() -> None:
    clock = Clock(NOW + 3 * 3600)
    b = new_board(clock)
    with b.subscribe() as q:
        apply_records(b, "shelf", [shelve(for_s=1800)])  # ended 2.5 h ago
        assert zone_state(b)["shelf"] is None
        assert events(q, "shelf") == []


def test_a_malformed_shelves_record_is_skipped_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    b = new_board(clock)
    metrics = Metrics()
    rejects = InternalRejects.of("dashboard", metrics, logging.getLogger("test.shelves"))
    bad = [b"{", orjson.dumps({"zone_id": ZONE, "action": "nap"}),
           orjson.dumps({"zone_id": ZONE, "action": "shelve", "at": "yesterday",
                         "until": "tomorrow"}), None]
    with caplog.at_level(logging.WARNING, "test.shelves"):
        assert apply_records(b, "shelf", [bad[0], shelve(), *bad[1:]], rejects=rejects,
                             topic="t.shelves") == len(bad)
    assert zone_state(b)["shelf"]["by"] == "somchai"  # the good record beside them applies
    assert metrics.internal_rejects.labels("t.shelves", "dashboard")._value.get() == len(bad)
    lines = [r for r in caplog.records if "t.shelves" in r.getMessage()]
    assert len(lines) == 1  # logged once, not once a record


def test_each_zone_shows_its_newest_density_confidence() -> None:
    b = new_board(Clock())
    assert zone_state(b)["confidence"] is None
    with b.subscribe() as q:
        assert apply_records(b, "density", [
            orjson.dumps({"zone_id": ZONE, "window_end": "t1", "density": 2.0,
                          "confidence": 0.82}),
            orjson.dumps({"zone_id": ZONE, "window_end": "t2", "density": 2.1,
                          "confidence": 0.31}),
        ]) == 0
        assert [e["confidence"] for e in events(q, "density")] == [0.82, 0.31]
    assert zone_state(b)["confidence"] == 0.31
    # Blind (null) or not given: no confidence; one out of range or not a number: skipped.
    assert apply_records(b, "density", [
        orjson.dumps({"zone_id": ZONE, "window_end": "t3", "density": None,
                      "confidence": None}),
        orjson.dumps({"zone_id": ZONE, "window_end": "t4", "density": 1.0,
                      "confidence": 1.5}),
        orjson.dumps({"zone_id": ZONE, "window_end": "t5", "density": 1.0,
                      "confidence": "high"}),
        orjson.dumps({"zone_id": ZONE, "window_end": "t6", "density": 1.0,
                      "confidence": True}),
    ]) == 3
    assert zone_state(b)["confidence"] is None
    assert zone_state(b)["density"][-1] == ["t3", None]


@pytest.mark.asyncio
async def test_a_page_hears_that_a_shelf_ended_by_itself_on_the_server_timer() -> None:
    clock = Clock()
    b = new_board(clock)
    apply_records(b, "shelf", [shelve(for_s=60)])

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with serving(b, _no_publish, health_every_s=0.2) as url, \
            aiohttp.ClientSession(headers=headers) as s, s.get(f"{url}/events") as r:
        [state] = await read_events(r, 1)
        [z] = [z for z in state["data"]["zones"] if z["zone_id"] == ZONE]
        assert z["shelf"]["reason"] == "stage rehearsal"
        clock.now = NOW + 61
        [ended] = await read_events(r, 1)
        assert (ended["event"], ended["data"]) == ("shelf", {"zone_id": ZONE, "shelf": None})


def test_a_shelf_is_judged_by_its_record_timestamp() -> None:
    """Issue 15: a record whose ``at`` is ahead of its Kafka timestamp (a year) is refused,
    counted as an internal reject; one with a far ``until`` ends 4 h after its timestamp."""
    clock = Clock()
    b = new_board(clock)
    metrics = Metrics()
    rejects = InternalRejects.of("dashboard", metrics, logging.getLogger("test.shelves"))
    ms = int(NOW * 1000)
    year = 365 * 86400
    assert apply_records(b, "shelf", [shelve(at_s=NOW + year, for_s=3600)],
                         timestamps_ms=[ms], rejects=rejects, topic="t.shelves") == 1
    assert metrics.internal_rejects.labels("t.shelves", "dashboard")._value.get() == 1
    clock.now = NOW + year + 60
    assert zone_state(b)["shelf"] is None
    clock.now = NOW
    assert apply_records(b, "shelf", [shelve(at_s=NOW + 59, for_s=10 * year)],
                         timestamps_ms=[ms], rejects=rejects, topic="t.shelves") == 0
    assert zone_state(b)["shelf"]["until"] == format_ts(ms + 4 * 3600 * 1000)
    clock.now = NOW + 4 * 3600
    assert zone_state(b)["shelf"] is None
