"""The operations-centre dashboard: ``safetour dashboard``.

A process of its own (aiohttp; no consumer group, so it never takes partitions from a worker
and any number can run). It reads from Kafka:

    safetour.alerts.v1    the alert feed and each zone's level (24 h back at start)
    safetour.acks.v1      who acknowledged what (24 h back)
    safetour.density.v1   each zone's density and its sparkline (15 min back)
    safetour.health.v1    the workers' heartbeats (agents/heartbeat.py; 15 min back)
    safetour.shelves.v1   operators' shelves (agents/shelves.py; the longest shelf back):
                          a shelved zone says so on its row and map marker until ``until``

Silence must never look like calm: when neither a heartbeat nor a density record has
arrived for ``SAFETOUR_DASHBOARD_STALE_S`` (30 s), or the dashboard cannot read Kafka, every
page shows a red banner (Thai and English) and greys the zones, until data returns. The
server sends a ``health`` event every few seconds; a page whose stream has been silent that
long shows the banner by itself (a dead dashboard server is silence too).

and serves, on loopback by default:

    GET  /login            the sign-in form (POST /login takes the token); ``?once=CODE``:
                           the one-time link ``safetour run`` prints; GET or POST /logout
    GET  /                 the map, the zone list with sparklines and threshold lines, one
                           card per alert episode, the critical sound (TH/EN; web/app.js)
    GET  /events           Server-Sent Events: ``state`` (zones, on every connect), then
                           ``alert`` and ``ack`` events with ids, then ``density`` updates
                           (a grid zone's with its heat map's cells, agents/dashboard/
                           heatmap.py; ``cells`` when they go stale), ``shelf`` changes,
                           and ``health`` (silence, staleness) every HEALTH_EVERY_S.
                           A reconnect sends ``Last-Event-ID`` (the browser's EventSource does)
                           and gets every alert and ack it missed: nothing is lost between
                           reconnects as long as the server keeps them (``FEED_MAX``).
    POST /api/ack          {"alert_id", "note"} -> an acknowledgement on safetour.acks.v1,
                           with the operator the login maps to; 202 once Kafka has it
    GET  /api/me           {"operator"} of the session (401 once it has ended)
    GET  /healthz          liveness (no login)

Operators and their tokens come from ``SAFETOUR_DASHBOARD_TOKENS`` (``name:token,...``) or
the file ``SAFETOUR_DASHBOARD_TOKENS_FILE`` (one ``name:token`` a line): never from the repo.
Sessions, the one-time link, the login rate limit, cookie flags and the security headers:
agents/dashboard/dashboard_auth.py. POSTs to the API must be JSON (a cross-site form cannot
send that), so acknowledgements cannot be forged from another site.

SIGTERM or SIGINT stops ``safetour dashboard`` within STOP_S (open event streams are cut).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import secrets
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import orjson
from aiohttp import web

from schemas import (
    MAX_MESSAGE_BYTES,
    Ack,
    ConfigError,
    Reason,
    Rejection,
    Thresholds,
    Zone,
    decode_ack,
    decode_alert,
    decode_json_object,
    encode_ack,
    format_ts,
)
from streams import LEVEL_NAMES, MOVING_DEFAULTS, STANDING_DEFAULTS, resolve_thresholds

from ..heartbeat import decode_heartbeat
from ..kafka import KafkaTarget, KafkaUnreachable, as_config
from ..logs import ThrottledLog
from ..metrics import Metrics
from ..rejects import InternalRejects
from ..shelves import LOOKBACK_S, Shelf, Shelves, parse_shelf
from .dashboard_auth import OPERATOR, AccessLog, Auth, AuthConfig
from .heatmap import HeatMaps

log = logging.getLogger(__name__)

FEED_MAX = 5000  # alerts and acks kept for replay to reconnecting pages
SPARK_POINTS = 60  # density points a zone keeps for its sparkline (5 min at a 5 s slide)
RECENT_ALERTS = 300  # alerts sent to a page on a fresh connect
HEALTH_EVERY_S = 3.0  # a health event to every page this often (also the stream's keepalive)
STOP_S = 5.0  # SIGTERM/SIGINT to exit, at most (README "The operations-centre dashboard")
STALE_S = 30.0  # no heartbeat and no density this long: the banner (SAFETOUR_DASHBOARD_STALE_S)

PublishAck = Callable[[bytes, bytes], Awaitable[None]]


def parse_operators(env: Mapping[str, str]) -> dict[str, str]:
    """``{token: operator}`` from SAFETOUR_DASHBOARD_TOKENS(_FILE); ConfigError if none."""
    raw = ""
    if env.get("SAFETOUR_DASHBOARD_TOKENS_FILE"):
        with open(env["SAFETOUR_DASHBOARD_TOKENS_FILE"], encoding="utf-8") as f:
            raw = f.read().replace("\n", ",")
    else:
        raw = env.get("SAFETOUR_DASHBOARD_TOKENS", "")
    out: dict[str, str] = {}
    for raw_item in raw.split(","):
        item = raw_item.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, token = item.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not name or len(token) < 16:
            raise ConfigError("dashboard operators are name:token with a token of 16+ "
                              f"characters; got {name or item!r}")
        out[token] = name
    if not out:
        raise ConfigError("set SAFETOUR_DASHBOARD_TOKENS (name:token,...) or "
                          "SAFETOUR_DASHBOARD_TOKENS_FILE")
    return out


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(slots=True)
class FeedEvent:
    seq: int
    kind: str  # "alert" | "ack"
    data: bytes  # JSON


@dataclass
class Board:
    """What every page sees: zones with level and density, the alert feed and the acks.
    Pure state (no Kafka, no HTTP): the consumer feeds it, the web handlers read it."""

    zones: list[Zone]
    boot: str = field(default_factory=lambda: secrets.token_hex(4))
    feed_max: int = FEED_MAX
    _seq: int = 0
    _feed: deque[FeedEvent] = field(default_factory=deque)
    _subscribers: set[asyncio.Queue[tuple[FeedEvent | None, str, bytes]]] = field(
        default_factory=set)
    level: dict[str, str] = field(default_factory=dict)
    alert_of_zone: dict[str, str] = field(default_factory=dict)
    density: dict[str, deque[tuple[str, float | None]]] = field(default_factory=dict)
    # Each zone's newest density confidence (0..1; None when blind or not given).
    confidence: dict[str, float | None] = field(default_factory=dict)
    # Zones with a grid: their cells' bounds and newest densities (agents/dashboard/heatmap.py).
    heat: HeatMaps = field(default_factory=HeatMaps, init=False)
    _zone_by_id: dict[str, Zone] = field(default_factory=dict, init=False)
    # Operators' shelves (agents/shelves.py), and the shelf each zone was last shown with:
    # one that ended by itself is announced once (expire_shelves).
    shelves: Shelves = field(default_factory=Shelves)
    _shown_shelf: dict[str, Shelf] = field(default_factory=dict)
    alerts: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    acks: dict[str, Ack] = field(default_factory=dict)
    # Freshness: wall clock (injectable), when data (a heartbeat or a density record) last
    # arrived, and why Kafka cannot be read, if it cannot.
    clock: Callable[[], float] = time.time
    stale_s: float = STALE_S
    started_at: float = field(default=0.0, init=False)
    last_data_at: float | None = None
    kafka_error: str | None = None
    workers: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    # The level thresholds of standing and moving crowds the alarm uses (SAFETOUR_*_LEVELS),
    # which a zone of the registry may override: the sparkline's threshold lines.
    standing: Thresholds = STANDING_DEFAULTS
    moving: Thresholds = MOVING_DEFAULTS

    def __post_init__(self) -> None:
        self.started_at = self.clock()
        for z in self.zones:
            self.level.setdefault(z.zone_id, "normal")
            self.density.setdefault(z.zone_id, deque(maxlen=SPARK_POINTS))
        self._zone_by_id = {z.zone_id: z for z in self.zones}
        self.heat = HeatMaps.of(self.zones)

    def thresholds(self, z: Zone) -> dict[str, float] | None:
        """The zone's level thresholds, p/m² (None if they do not rise: no lines drawn)."""
        try:
            t = resolve_thresholds(z.crowd, z.thresholds,
                                   self.standing if z.crowd == "standing" else self.moving)
        except ValueError:
            return None
        return {"elevated": t.elevated, "high": t.high, "critical": t.critical}

    # -- input ---------------------------------------------------------------------------
    def on_alert(self, alert: Mapping[str, Any]) -> None:
        zone, level = str(alert.get("zone_id")), str(alert.get("level"))
        if level not in LEVEL_NAMES or "alert_id" not in alert:
            log.warning("dashboard: ignoring a malformed alert %r", alert.get("alert_id"))
            return
        if alert.get("exercise") is not True:  # a drill never changes a real zone's level
            self.level[zone] = "normal" if alert.get("status") == "resolved" else level
            self.alert_of_zone[zone] = str(alert["alert_id"])
        self.alerts[str(alert["alert_id"])] = alert
        self._add("alert", orjson.dumps(alert))

    def on_ack(self, ack: Ack) -> None:
        self.acks.setdefault(ack.alert_id, ack)  # the first acknowledgement stands
        self._add("ack", encode_ack(ack))

    def on_density(self, d: Mapping[str, Any], ts_ms: int | None = None) -> None:
        self.saw_data(ts_ms)
        zone = str(d.get("zone_id"))
        if zone not in self.density:
            return
        point = (str(d.get("window_end")), d.get("density"))
        self.density[zone].append(point)
        conf = d.get("confidence")
        self.confidence[zone] = float(conf) if isinstance(conf, int | float) else None
        event: dict[str, Any] = {"zone_id": zone, "point": point,
                                 "confidence": self.confidence[zone]}
        if self.heat.has_grid(zone):  # its cells, or null: no heat map (none, or misfit)
            now = self.clock()
            at = now if ts_ms is None else min(ts_ms / 1000, now)
            cells = self.heat.on_record(zone, d, at)
            event["cells"] = None if cells is None else self.heat.fresh(zone, now, self.stale_s)
        self._publish(None, "density", orjson.dumps(event))

    def expire_cells(self) -> None:
        """Take away (and tell every page) each heat map older than the staleness limit: a
        zone whose grid went quiet shows no cells of minutes ago as if they were now."""
        for zone in self.heat.expire(self.clock(), self.stale_s):
            self._publish(None, "cells", orjson.dumps({"zone_id": zone, "cells": None}))

    def on_shelf(self, zone: str, shelf: Shelf | None) -> None:
        """A shelves record of ``zone``: a shelf (until its ``until``) or None (unshelved)."""
        self.shelves.put(zone, shelf)
        self._announce_shelf(zone)

    def shelf_of(self, zone: str) -> Shelf | None:
        """The shelf that holds on ``zone`` now, by the board's clock."""
        return self.shelves.active(zone, self.clock())

    def expire_shelves(self) -> None:
        """Announce (once) each shelf shown that has ended by itself at its ``until``."""
        for zone in list(self._shown_shelf):
            self._announce_shelf(zone)

    def _announce_shelf(self, zone: str) -> None:
        now = self.shelf_of(zone)
        if now == self._shown_shelf.get(zone):
            return
        if now is None:
            self._shown_shelf.pop(zone, None)
        else:
            self._shown_shelf[zone] = now
        self._publish(None, "shelf", orjson.dumps(
            {"zone_id": zone, "shelf": None if now is None else now.to_json()}))

    def on_heartbeat(self, hb: Mapping[str, Any], ts_ms: int | None = None) -> None:
        self.workers[str(hb["worker_id"])] = hb
        self.saw_data(ts_ms)

    # -- freshness -----------------------------------------------------------------------
    def saw_data(self, ts_ms: int | None = None) -> None:
        """Data from the pipeline, produced at ``ts_ms`` (its Kafka timestamp; now if
        unknown, never later than now): records replayed from before count as old."""
        now = self.clock()
        at = now if ts_ms is None else min(ts_ms / 1000, now)
        was_stale = self.is_stale()
        if self.last_data_at is None or at > self.last_data_at:
            self.last_data_at = at
        if was_stale and not self.is_stale():  # data is back: tell the pages at once
            self._publish(None, "health", self.health())

    def kafka_failed(self, error: str | None) -> None:
        """The follower cannot read Kafka (``error``), or can again (None)."""
        changed = (error is None) != (self.kafka_error is None)
        self.kafka_error = error
        if changed:
            self._publish(None, "health", self.health())

    def silent_s(self) -> float:
        """Seconds since the newest data (since the board started, if none yet)."""
        since = self.started_at if self.last_data_at is None else self.last_data_at
        return max(self.clock() - since, 0.0)

    def is_stale(self) -> bool:
        return self.kafka_error is not None or self.silent_s() > self.stale_s

    def health(self) -> bytes:
        last = self.last_data_at
        return orjson.dumps({
            "stale": self.is_stale(), "silent_s": round(self.silent_s()),
            "stale_after_s": self.stale_s, "kafka_ok": self.kafka_error is None,
            "last_data": None if last is None else format_ts(round(last * 1000)),
            "workers": sorted(self.workers)})

    # -- output --------------------------------------------------------------------------
    def state(self) -> bytes:
        return orjson.dumps({"boot": self.boot, "stale_after_s": self.stale_s, "zones": [{
            "zone_id": z.zone_id, "name": {"th": z.name_th, "en": z.name_en},
            "area_m2": z.area_m2, "crowd": z.crowd, "estimated": z.area_estimated,
            "polygon": z.polygon, "level": self.level[z.zone_id],
            "thresholds": self.thresholds(z), "density": list(self.density[z.zone_id]),
            "confidence": self.confidence.get(z.zone_id),
            "grid": self.heat.grids.get(z.zone_id),
            "cells": self.heat.fresh(z.zone_id, self.clock(), self.stale_s),
            "shelf": None if (sh := self.shelf_of(z.zone_id)) is None else sh.to_json(),
        } for z in self.zones]})

    def replay(self, last_event_id: str | None) -> list[FeedEvent]:
        """Feed events after ``last_event_id`` (``boot:seq``); all of them (the newest
        RECENT_ALERTS alerts, with every ack) if the id is from another run of the server,
        missing, or older than what is kept."""
        boot, _, seq = (last_event_id or "").partition(":")
        if boot == self.boot and seq.isdigit():
            after = int(seq)
            if not self._feed or self._feed[0].seq <= after + 1:
                return [e for e in self._feed if e.seq > after]
        alerts = [e for e in self._feed if e.kind == "alert"][-RECENT_ALERTS:]
        first = alerts[0].seq if alerts else 0
        return [e for e in self._feed if e.seq >= first or e.kind == "ack"]

    def event_id(self, e: FeedEvent) -> str:
        return f"{self.boot}:{e.seq}"

    @contextlib.contextmanager
    def subscribe(self) -> Any:
        q: asyncio.Queue[tuple[FeedEvent | None, str, bytes]] = asyncio.Queue(maxsize=10_000)
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)

    def end_streams(self) -> None:
        """Every open event stream ends (the server is stopping)."""
        self._publish(None, "end", b"")

    def _add(self, kind: str, data: bytes) -> None:
        self._seq += 1
        e = FeedEvent(self._seq, kind, data)
        self._feed.append(e)
        while len(self._feed) > self.feed_max:
            self._feed.popleft()
        self._publish(e, kind, data)

    def _publish(self, e: FeedEvent | None, kind: str, data: bytes) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait((e, kind, data))
            except asyncio.QueueFull:  # a stuck page: it reconnects and replays
                self._subscribers.discard(q)


def _sse(kind: str, data: bytes, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\n".encode() + b"data: " + data + b"\n\n"


def _static(name: str) -> bytes:
    return files("agents.dashboard").joinpath("web", name).read_bytes()


CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html",
                 ".json": "application/json", ".woff2": "font/woff2"}
STATIC = ("app.js", "app.css", "basemap.json", "vendor/leaflet/leaflet.js",
          "vendor/leaflet/leaflet.css", "vendor/leaflet/LICENSE", "vendor/sarabun/OFL.txt",
          *(f"vendor/sarabun/sarabun-{script}-{weight}-normal.woff2"
            for script in ("thai", "latin") for weight in (400, 600)))
def build_web_app(board: Board, operators: Mapping[str, str], publish_ack: PublishAck,
                  *, auth: Auth | None = None, health_every_s: float = HEALTH_EVERY_S,
                  ) -> web.Application:
    """The web side; ``auth`` signs operators in (agents/dashboard/dashboard_auth.py), by
    default with the default settings and ``operators``."""
    auth = auth if auth is not None else Auth(operators)
    app = web.Application(client_max_size=64 * 1024)
    auth.install(app)

    async def index(request: web.Request) -> web.Response:
        page = _static("index.html").decode().replace(
            "{{operator}}", html.escape(request[OPERATOR], quote=True))
        return web.Response(text=page, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        ext = name[name.rfind("."):] if "." in name.rsplit("/", 1)[-1] else ""
        return web.Response(body=_static(name),
                            content_type=CONTENT_TYPES.get(ext, "text/plain"),
                            headers={"Cache-Control": "max-age=300"})

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
        loop = asyncio.get_running_loop()
        with board.subscribe() as q:
            await resp.write(_sse("state", board.state()))
            await resp.write(_sse("health", board.health()))
            sent = 0
            for e in board.replay(last):
                await resp.write(_sse(e.kind, e.data, board.event_id(e)))
                sent = e.seq
            next_health = loop.time() + health_every_s
            while request.transport is not None and not request.transport.is_closing():
                try:
                    e, kind, data = await asyncio.wait_for(
                        q.get(), max(next_health - loop.time(), 0.0))
                except TimeoutError:
                    if not auth.still_signed_in(request):  # signed out or expired
                        break
                    board.expire_shelves()  # a shelf over by itself: every page hears it
                    board.expire_cells()  # so does a heat map gone stale
                    # A timer on the server, not data: silence shows on the page as silence.
                    await resp.write(_sse("health", board.health()))
                    next_health = loop.time() + health_every_s
                    continue
                if e is None and kind == "end":  # the server is stopping
                    break
                if e is None:
                    await resp.write(_sse(kind, data))
                elif e.seq > sent:
                    await resp.write(_sse(kind, data, board.event_id(e)))
                    sent = e.seq
        return resp

    async def ack(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.json_response({"error": "send application/json"}, status=415)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json_response({"error": "not JSON"}, status=400)
        alert_id = body.get("alert_id") if isinstance(body, dict) else None
        note = body.get("note", "") if isinstance(body, dict) else ""
        if not isinstance(alert_id, str) or alert_id not in board.alerts:
            return web.json_response({"error": "unknown alert_id"}, status=404)
        if not isinstance(note, str) or len(note) > 500:
            return web.json_response({"error": "note: text of at most 500 characters"},
                                     status=400)
        a = Ack(alert_id, request[OPERATOR], int(time.time() * 1000), note.strip(),
                str(board.alerts[alert_id].get("zone_id")) or None)
        value = encode_ack(a)
        assert len(value) < MAX_MESSAGE_BYTES
        await publish_ack(alert_id.encode(), value)
        log.info("acknowledged %s by %s", alert_id, a.operator)
        return web.json_response(orjson.loads(value), status=202)

    async def me(request: web.Request) -> web.Response:
        return web.json_response({"operator": request[OPERATOR]},
                                 headers={"Cache-Control": "no-store"})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def end_streams(app: web.Application) -> None:
        board.end_streams()

    app.on_shutdown.append(end_streams)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name:.+}", static)
    app.router.add_get("/events", events)
    app.router.add_post("/api/ack", ack)
    app.router.add_get("/api/me", me)
    app.router.add_get("/healthz", healthz)
    return app


def _density(value: bytes | None) -> dict[str, Any] | Rejection:
    """A density record the board can show: zone_id and window_end strings, density a number
    or null (a blind zone)."""
    d = decode_json_object(value)
    if isinstance(d, Rejection):
        return d
    for key in ("zone_id", "window_end"):
        v = d.get(key)
        if not isinstance(v, str) or not 1 <= len(v) <= 64:
            return Rejection(Reason.SCHEMA, f"/{key}: must be a string of 1..64 characters")
    dens = d.get("density")
    if dens is not None and (isinstance(dens, bool) or not isinstance(dens, int | float)):
        return Rejection(Reason.SCHEMA, "/density: must be a number or null")
    conf = d.get("confidence")
    if conf is not None and (isinstance(conf, bool) or not isinstance(conf, int | float)
                             or not 0 <= conf <= 1):
        return Rejection(Reason.SCHEMA, "/confidence: must be a number 0..1 or null")
    return d


def apply_records(board: Board, topic_kind: str, values: Iterable[bytes | None], *,
                  timestamps_ms: Iterable[int | None] | None = None,
                  rejects: InternalRejects | None = None, topic: str = "") -> int:
    """Feed consumed record values of one topic (kind ``alert``, ``ack``, ``density``,
    ``health`` or ``shelf``) to the board; returns how many were malformed (counted and logged
    through ``rejects``, skipped: the records beside them are applied)."""
    bad = 0
    stamps = iter(timestamps_ms) if timestamps_ms is not None else None
    for v in values:
        ts = next(stamps, None) if stamps is not None else None
        doc: Any
        if topic_kind == "ack":
            doc = decode_ack(v)
        elif topic_kind == "alert":
            doc = decode_alert(v)
        elif topic_kind == "health":
            doc = decode_heartbeat(v)
        elif topic_kind == "shelf":
            parsed = parse_shelf(v, ts_ms=ts, now_ms=int(board.clock() * 1000))
            doc = Rejection(Reason.SCHEMA, parsed) if isinstance(parsed, str) else parsed
        else:
            doc = _density(v)
        if isinstance(doc, Rejection):
            bad += 1
            if rejects is not None:
                rejects.count(topic or topic_kind, doc)
        elif topic_kind == "ack":
            board.on_ack(doc)
        elif topic_kind == "alert":
            board.on_alert(doc)
        elif topic_kind == "health":
            board.on_heartbeat(doc, ts)
        elif topic_kind == "shelf":
            board.on_shelf(*doc)
        else:
            board.on_density(doc, ts)
    return bad


async def follow_topics(kafka: KafkaTarget, topics: Mapping[str, tuple[str, float]],
                        board: Board, stop: asyncio.Event,
                        rejects: InternalRejects | None = None) -> None:
    """Read ``{kind: (topic, lookback_s)}`` into ``board`` until ``stop``."""
    from aiokafka import TopicPartition  # noqa: PLC0415

    from ..topics import partitions_of, seek_since  # noqa: PLC0415

    cfg = as_config(kafka)
    kind_of: dict[str, str] = {t: k for k, (t, _) in topics.items()}
    consumer = cfg.consumer()
    await cfg.start(consumer)
    try:
        tps = [TopicPartition(t, p) for t, _ in topics.values()
               for p in await partitions_of(cfg, t)]
        consumer.assign(tps)
        now = time.time()
        for topic, lookback_s in topics.values():
            await seek_since(consumer, [tp for tp in tps if tp.topic == topic],
                             int((now - lookback_s) * 1000))
        board.kafka_failed(None)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=250, max_records=5000)
            for tp, records in batches.items():
                apply_records(board, kind_of[tp.topic], [r.value for r in records],
                              timestamps_ms=[r.timestamp for r in records], rejects=rejects,
                              topic=tp.topic)
    finally:
        await consumer.stop()


async def follow_retrying(kafka: KafkaTarget, topics: Mapping[str, tuple[str, float]],
                          board: Board, stop: asyncio.Event, rejects: InternalRejects,
                          *, retry_s: float = 2.0) -> None:
    """:func:`follow_topics`, started again whenever it fails: a dashboard that cannot read
    Kafka says so on every page (the banner) and keeps trying, it does not go dark."""
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    from ..topics import TopicError  # noqa: PLC0415

    cfg = as_config(kafka)
    failures = ThrottledLog(log)
    while not stop.is_set():
        try:
            await follow_topics(cfg, topics, board, stop, rejects)
        except (KafkaError, TopicError, KafkaUnreachable, OSError) as exc:
            board.kafka_failed(f"{type(exc).__name__}: {exc}")
            failures.note("dashboard: cannot read Kafka at %s: %s; retrying", cfg.bootstrap,
                          exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)


def dashboard_runner(app: web.Application) -> web.AppRunner:
    """The runner the dashboard serves ``app`` with: a closed page ends its stream, and the
    access log shows no query strings."""
    return web.AppRunner(app, shutdown_timeout=1, handler_cancellation=True,
                         access_log_class=AccessLog)


def tls_context(settings: Any) -> ssl.SSLContext | None:
    """HTTPS with SAFETOUR_DASHBOARD_TLS_CERT_FILE/_KEY_FILE (PEM); None: plain HTTP."""
    cert = getattr(settings, "dashboard_tls_cert_file", None)
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, getattr(settings, "dashboard_tls_key_file", None) or None)
    return ctx


def _levels(settings: Any, name: str, default: Thresholds) -> Thresholds:
    """``settings.<name>`` (elevated, high, critical) as Thresholds; ``default`` if unset."""
    levels = getattr(settings, name, None)
    return default if levels is None else Thresholds(*levels)


async def serve_dashboard(settings: Any, operators: Mapping[str, str], host: str, port: int,
                          *, stop: asyncio.Event,
                          ready: Callable[[str, str | None], None] | None = None,
                          login_link_for: str | None = None) -> None:
    """Run the dashboard until ``stop``: the Kafka follower, the producer, the web server.
    ``ready(url, link)`` once it serves; ``link`` is a one-time sign-in link for the operator
    ``login_link_for`` (None without one)."""
    board = Board(settings.load_registry(),
                  stale_s=getattr(settings, "dashboard_stale_s", STALE_S),
                  standing=_levels(settings, "standing_levels", STANDING_DEFAULTS),
                  moving=_levels(settings, "moving_levels", MOVING_DEFAULTS))
    rejects = InternalRejects.of("dashboard", Metrics(), log)
    t = settings.topics
    cfg = settings.kafka
    producer = cfg.producer()
    await cfg.start(producer)

    async def publish_ack(key: bytes, value: bytes) -> None:
        await producer.send_and_wait(t.acks, key=key, value=value)

    follower = asyncio.create_task(follow_retrying(
        cfg,
        {"alert": (t.alerts, 24 * 3600), "ack": (t.acks, 24 * 3600),
         "density": (t.density, 15 * 60), "health": (t.health, 15 * 60),
         "shelf": (t.shelves, LOOKBACK_S)}, board, stop,
        rejects), name="dashboard-follower")
    auth = Auth(operators, AuthConfig.of(settings))
    tls = tls_context(settings)
    runner = dashboard_runner(build_web_app(board, operators, publish_ack, auth=auth))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        url = f"{'https' if tls else 'http'}://{host}:{port}/"
        log.debug("dashboard on %s", url)
        if ready is not None:
            link = None
            if login_link_for is not None:
                link = f"{url}login?once={auth.sessions.one_time_code(login_link_for)}"
            ready(url, link)
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({follower, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if follower in done:
            follower.result()  # raise what stopped it
    finally:
        stop.set()

        async def stop_follower() -> None:  # it sees ``stop`` within 250 ms, unless busy
            _, pending = await asyncio.wait({follower}, timeout=1.0)  # connecting to Kafka
            for task in pending:
                task.cancel()
            await asyncio.wait({follower}, timeout=1.0)

        # Within STOP_S: open event streams end at once (on_shutdown), Kafka in parallel.
        await asyncio.gather(stop_follower(), runner.cleanup())
        await producer.stop()
        if follower.done() and not follower.cancelled() and follower.exception() is not None:
            log.warning("dashboard: the Kafka follower ended with %r", follower.exception())
