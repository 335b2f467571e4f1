"""The dashboard's web side against a real local aiohttp server (no Kafka: the board is fed
directly and acknowledgements go to an in-memory publisher)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from agents.config import repo_root
from agents.dashboard.board import Board
from agents.dashboard.dashboard import parse_operators
from agents.dashboard.follower import apply_records
from agents.dashboard.handlers import build_web_app
from schemas import Ack, ConfigError, Thresholds, decode_ack, load_zones
from streams import MOVING_DEFAULTS

TOKEN = "t0ken-for-somchai-0123456789"
OPERATORS = {TOKEN: "somchai"}


def alert(zone: str, level: str, status: str, ts: str) -> dict[str, Any]:
    return {"alert_id": f"{zone}:1", "zone_id": zone, "level": level, "status": status,
            "ts": ts, "density": 5.1, "message": {"th": "วิกฤต", "en": "critical"}}


@pytest.fixture
def board() -> Board:
    return Board(load_zones(repo_root() / "deploy/zones/phitsanulok.yaml"))


@contextlib.asynccontextmanager
async def serving(board: Board, publish: Callable[[bytes, bytes], Awaitable[None]],
                  **kw: Any) -> AsyncIterator[str]:
    """The dashboard's web app on a free loopback port; its base URL."""
    runner = web.AppRunner(build_web_app(board, OPERATORS, publish, **kw),
                           shutdown_timeout=0.5, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def server(board: Board) -> AsyncIterator[tuple[str, list[tuple[bytes, bytes]]]]:
    published: list[tuple[bytes, bytes]] = []

    async def publish(key: bytes, value: bytes) -> None:
        published.append((key, value))
        a = decode_ack(value)
        assert isinstance(a, Ack)
        board.on_ack(a)  # as the Kafka follower would, once the ack is on the topic

    async with serving(board, publish) as url:
        yield url, published
    # cleanup() cancels open event streams; let those handlers finish unwinding.
    me = asyncio.current_task()
    for _ in range(200):
        if all(t is me or t.done() for t in asyncio.all_tasks()):
            break
            await asyncio.sleep(0.01)


async def read_events(resp: aiohttp.ClientResponse, n: int, *, health: bool = False
                      ) -> list[dict[str, Any]]:
    """The next ``n`` SSE events (comments skipped, and ``health`` events unless
    ``health``), each {id, event, data}."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] = {}
    while len(out) < n:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if not line:
            if cur:
                cur["data"] = orjson.loads(cur["data"])
                if health or cur["event"] != "health":
                    out.append(cur)
                cur = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        cur[field] = value
    return out


@pytest.mark.asyncio
async def test_everything_but_login_needs_a_token(
    server: tuple[str, list[Any]]
) -> None:
    url, _ = server
    # unsafe: aiohttp's jar otherwise drops cookies of IP-address hosts (browsers keep them).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(f"{url}/", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "/login")
        async with s.get(f"{url}/events") as r:
            assert r.status == 401
        async with s.post(f"{url}/api/ack", json={"alert_id": "x"}) as r:
            assert r.status == 401
        async with s.post(f"{url}/login", data={"token": "wrong-token-0123456789"}) as r:
            assert r.status == 401
            assert "Invalid token" in await r.text()
        async with s.get(f"{url}/login?token={TOKEN}", allow_redirects=False) as r:
            assert r.status == 400  # a token in a URL does not sign in
            assert "set-cookie" not in r.headers
        async with s.get(f"{url}/healthz") as r:
            assert r.status == 200
        async with s.post(f"{url}/login", data={"token": TOKEN}) as r:  # follows to /
            assert r.status == 200
            page = await r.text()
            assert "somchai" in page
            assert "leaflet.js" in page
        cookie = next(c for c in s.cookie_jar if c.key == "safetour_session")
        assert cookie["httponly"]
        assert cookie["samesite"] == "Strict"
        async with s.get(f"{url}/static/vendor/leaflet/leaflet.js") as r:
            assert r.status == 200
            assert r.content_type == "text/javascript"
        async with s.get(f"{url}/static/../../config.py") as r:
            assert r.status == 404


@pytest.mark.asyncio
async def test_ack_records_the_operator_and_checks_input(
    server: tuple[str, list[tuple[bytes, bytes]]], board: Board
) -> None:
    url, published = server
    board.on_alert(alert("naresuan-bridge", "critical", "raised", "2026-02-16T13:06:25.000Z"))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(f"{url}/api/ack", json={"alert_id": "nope"}) as r:
            assert r.status == 404
        async with s.post(f"{url}/api/ack", data=b"alert_id=naresuan-bridge:1") as r:
            assert r.status == 415  # a cross-site form post cannot send JSON
        async with s.post(f"{url}/api/ack", json={"alert_id": "naresuan-bridge:1",
                                                  "note": "x" * 501}) as r:
            assert r.status == 400
        async with s.post(f"{url}/api/ack", json={"alert_id": "naresuan-bridge:1",
                                                  "note": "ส่งเจ้าหน้าที่แล้ว"}) as r:
            assert r.status == 202
    [(key, value)] = published
    ack = decode_ack(value)
    assert isinstance(ack, Ack)
    assert (key, ack.alert_id, ack.operator, ack.note, ack.zone_id) == (
        b"naresuan-bridge:1", "naresuan-bridge:1", "somchai", "ส่งเจ้าหน้าที่แล้ว",
        "naresuan-bridge")


@pytest.mark.asyncio
async def test_a_reconnecting_page_gets_exactly_what_it_missed(
    server: tuple[str, list[Any]], board: Board
) -> None:
    url, _ = server
    headers = {"Authorization": f"Bearer {TOKEN}"}
    board.on_alert(alert("naresuan-bridge", "high", "raised", "2026-02-16T13:00:00.000Z"))
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(f"{url}/events") as r:
            state, first = await read_events(r, 2)
            assert state["event"] == "state"
            levels = {z["zone_id"]: z["level"] for z in state["data"]["zones"]}
            assert levels["naresuan-bridge"] == "high"
            assert first["event"] == "alert"
            board.on_alert(alert("naresuan-bridge", "critical", "escalated",
                                 "2026-02-16T13:01:00.000Z"))
            board.on_density({"zone_id": "naresuan-bridge", "density": 5.2,
                              "window_end": "2026-02-16T13:01:00.000Z"})
            live = await read_events(r, 2)
            assert [e["event"] for e in live] == ["alert", "density"]
            assert "id" not in live[1]  # density is state, not feed: no id to resume from
            last_id = live[0]["id"]
        # The page is away: two alerts and an ack happen.
        board.on_alert(alert("naresuan-bridge", "critical", "escalated",
                             "2026-02-16T13:02:00.000Z"))
        board.on_ack(Ack("naresuan-bridge:1", "malee", 1771247000000))
        async with s.get(f"{url}/events", headers={"Last-Event-ID": last_id}) as r:
            state, *missed = await read_events(r, 3)
            bridge = next(z for z in state["data"]["zones"] if z["zone_id"] == "naresuan-bridge")
            assert bridge["density"] == [["2026-02-16T13:01:00.000Z", 5.2]]
            assert bridge["level"] == "critical"
            assert [e["event"] for e in missed] == ["alert", "ack"]
            assert missed[0]["data"]["ts"] == "2026-02-16T13:02:00.000Z"
            assert missed[1]["data"]["operator"] == "malee"
            ids = [int(e["id"].split(":")[1]) for e in missed]
            assert ids == [int(last_id.split(":")[1]) + 1, int(last_id.split(":")[1]) + 2]
        # An id from another server run (or none): the whole kept feed, the page dedups.
        async with s.get(f"{url}/events", headers={"Last-Event-ID": "other:1"}) as r:
            _, *everything = await read_events(r, 5)
            assert [e["event"] for e in everything] == ["alert", "alert", "alert", "ack"]


def test_board_replay_falls_back_to_everything_when_the_feed_was_trimmed(
    board: Board
) -> None:
    board.feed_max = 3
    for i in range(6):
        board.on_alert(alert("naresuan-bridge", "high", "raised", f"2026-02-16T13:0{i}:00Z"))
    assert [e.seq for e in board.replay(f"{board.boot}:5")] == [6]
    assert [e.seq for e in board.replay(f"{board.boot}:1")] == [4, 5, 6]  # 2 and 3 are gone
    assert board.level["naresuan-bridge"] == "high"
    board.on_alert(alert("naresuan-bridge", "normal", "resolved", "2026-02-16T13:09:00Z"))
    assert board.level["naresuan-bridge"] == "normal"


def test_bad_records_are_counted_not_fatal(board: Board) -> None:
    assert apply_records(board, "alert", [b"{", b"[]", orjson.dumps(
        alert("naresuan-bridge", "high", "raised", "2026-02-16T13:00:00Z"))]) == 2
    assert apply_records(board, "ack", [b'{"alert_id": "x"}', None]) == 2
    assert board.level["naresuan-bridge"] == "high"


def test_operators_come_from_the_environment(tmp_path: Any) -> None:
    f = tmp_path / "ops"
    f.write_text(f"# operators\nsomchai:{TOKEN}\nmalee:{'m' * 20}\n")
    assert parse_operators({"SAFETOUR_DASHBOARD_TOKENS_FILE": str(f)}) == {
        TOKEN: "somchai", "m" * 20: "malee"}
    with pytest.raises(ConfigError, match="SAFETOUR_DASHBOARD_TOKENS"):
        parse_operators({})
    with pytest.raises(ConfigError, match="16"):
        parse_operators({"SAFETOUR_DASHBOARD_TOKENS": "somchai:short"})


def test_a_malformed_alert_between_two_good_ones_is_skipped(board: Board) -> None:
    first = alert("naresuan-bridge", "high", "raised", "2026-02-16T13:00:00Z")
    second = alert("naresuan-bridge", "critical", "escalated", "2026-02-16T13:01:00Z")
    malformed = [
        {"alert_id": "naresuan-bridge:1", "zone_id": "naresuan-bridge", "level": "normal"},
        {**second, "zone_id": ["naresuan-bridge"]},
        {**second, "status": "exploded"},
        {**second, "density": "lots"},
    ]
    values = [orjson.dumps(first), *map(orjson.dumps, malformed), orjson.dumps(second)]
    assert apply_records(board, "alert", values) == len(malformed)
    assert [orjson.loads(e.data)["ts"] for e in board.replay(None)] == [
        first["ts"], second["ts"]]
    assert board.level["naresuan-bridge"] == "critical"
    # Density records the page could not draw are skipped too.
    assert apply_records(board, "density", [
        orjson.dumps({"zone_id": "naresuan-bridge", "window_end": "t1", "density": 1.0}),
        orjson.dumps({"zone_id": "naresuan-bridge", "window_end": "t2", "density": "x"}),
        orjson.dumps({"zone_id": "naresuan-bridge", "window_end": "t3", "density": None}),
    ]) == 1
    assert list(board.density["naresuan-bridge"]) == [("t1", 1.0), ("t3", None)]


class Clock:
    def __init__(self, now: float = 1_771_247_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_silence_is_not_calm_the_board_goes_stale_and_back() -> None:
    clock = Clock()
    b = Board(load_zones(repo_root() / "deploy/zones/phitsanulok.yaml"), clock=clock,
              stale_s=30)

    def health() -> dict[str, Any]:
        h: dict[str, Any] = orjson.loads(b.health())
        return h

    assert health()["stale"] is False  # just started: not yet
    clock.now += 31
    assert health() | {"last_data": None} == {
        "stale": True, "silent_s": 31, "stale_after_s": 30, "kafka_ok": True,
        "last_data": None, "workers": []}
    with b.subscribe() as q:
        hb = orjson.dumps({"worker_id": "w1", "ts": "2026-02-16T13:00:00.000Z"})
        assert apply_records(b, "health", [hb], timestamps_ms=[round(clock.now * 1000)]) == 0
        assert not b.is_stale()
        _, kind, data = q.get_nowait()  # the pages hear at once that data is back
        assert (kind, orjson.loads(data)["stale"]) == ("health", False)
    assert health()["workers"] == ["w1"]
    clock.now += 30
    assert not b.is_stale()
    clock.now += 1
    assert b.is_stale()
    # A density record counts as data too; one replayed from long ago does not.
    b.on_density({"zone_id": "naresuan-bridge", "window_end": "t", "density": 1.0},
                 round((clock.now - 600) * 1000))
    assert b.is_stale()
    assert health()["silent_s"] == 31
    b.on_density({"zone_id": "naresuan-bridge", "window_end": "t", "density": 1.0},
                 round(clock.now * 1000))
    assert not b.is_stale()
    # A timestamp from the future (a fast clock) counts as now, not as later.
    b.on_density({"zone_id": "naresuan-bridge", "window_end": "t", "density": 1.0},
                 round((clock.now + 3600) * 1000))
    clock.now += 31
    assert b.is_stale()
    # Kafka unreadable: stale at once, whatever the last data said.
    b.saw_data()
    b.kafka_failed("KafkaConnectionError: no broker")
    assert health()["stale"] is True
    assert health()["kafka_ok"] is False
    b.kafka_failed(None)
    assert not b.is_stale()
    # Malformed heartbeats are counted, not applied.
    assert apply_records(b, "health", [b"{", b"[]", orjson.dumps({"worker_id": 5}),
                                       orjson.dumps({"worker_id": "w2"})]) == 4
    assert health()["workers"] == ["w1"]


@pytest.mark.asyncio
async def test_pages_get_a_health_event_on_a_server_timer(board: Board) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with serving(board, _no_publish, health_every_s=0.2) as url, \
            aiohttp.ClientSession(headers=headers) as s, s.get(f"{url}/events") as r:
        state, *health = await read_events(r, 4, health=True)
        assert state["event"] == "state"
        assert state["data"]["stale_after_s"] == board.stale_s
        # one on connect, then one every 0.2 s with nothing else happening
        assert [e["event"] for e in health] == ["health"] * 3
        assert health[0]["data"]["stale"] is False
        assert "id" not in health[0]  # state, not feed


async def _no_publish(key: bytes, value: bytes) -> None:
    raise AssertionError("no acks in this test")


def test_the_state_gives_each_zone_its_thresholds_for_the_sparkline() -> None:
    """The sparkline's threshold lines: the alarm's levels for the zone's crowd type (as
    configured, SAFETOUR_*_LEVELS), with any level the zone itself sets."""
    zones = load_zones(repo_root() / "deploy/zones/phitsanulok.yaml")
    vihara = next(z for z in zones if z.zone_id == "wat-yai-vihara")  # standing
    bridge = next(z for z in zones if z.zone_id == "naresuan-bridge")  # moving
    own = dataclasses.replace(vihara, zone_id="own-levels",
                              thresholds=Thresholds(elevated=0, high=3.0, critical=4.5))
    b = Board([vihara, bridge, own], standing=Thresholds(2.5, 4.0, 5.5))
    got = {z["zone_id"]: z["thresholds"] for z in orjson.loads(b.state())["zones"]}
    assert got == {
        "wat-yai-vihara": {"elevated": 2.5, "high": 4.0, "critical": 5.5},
        "naresuan-bridge": {"elevated": MOVING_DEFAULTS.elevated, "high": MOVING_DEFAULTS.high,
                            "critical": MOVING_DEFAULTS.critical},
        "own-levels": {"elevated": 2.5, "high": 3.0, "critical": 4.5},
    }
    # Levels that do not rise (a zone's own high above the configured critical): no lines.
    odd = dataclasses.replace(vihara, thresholds=Thresholds(0, 9.0, 0))
    assert orjson.loads(Board([odd]).state())["zones"][0]["thresholds"] is None


def test_a_drill_never_changes_a_real_zones_level(board: Board) -> None:
    # A real crush on the bridge, then a drill's episode on the same zone rises and resolves:
    # the zone stays critical (before, the drill's resolution turned it green).
    b = board
    b.on_alert(alert("naresuan-bridge", "critical", "raised", "2026-02-16T13:05:00Z"))
    for level, status, ts in (("elevated", "raised", "2026-02-16T13:06:00Z"),
                              ("normal", "resolved", "2026-02-16T13:07:00Z")):
        drill = dict(alert("naresuan-bridge", level, status, ts), exercise=True,
                     alert_id="drill-naresuan-bridge:1")
        b.on_alert(drill)
    assert b.level["naresuan-bridge"] == "critical"
    zones = {z["zone_id"]: z for z in orjson.loads(b.state())["zones"]}
    assert zones["naresuan-bridge"]["level"] == "critical"
    assert "drill-naresuan-bridge:1" in b.alerts  # its card is still shown
