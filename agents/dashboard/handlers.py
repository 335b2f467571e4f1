"""The dashboard's HTTP side: the page, its static files, the API (``POST /api/ack``,
``GET /api/me``), ``/healthz`` and the event stream (agents/dashboard/events.py), behind the
sign-in (agents/dashboard/dashboard_auth.py); and the runner that serves them.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib.resources import files

import orjson
from aiohttp import web

from schemas import MAX_MESSAGE_BYTES, Ack, encode_ack

from .board import Board
from .dashboard_auth import OPERATOR, AccessLog, Auth
from .events import HEALTH_EVERY_S, stream_events

__all__ = ["CONTENT_TYPES", "STATIC", "PublishAck", "build_web_app", "dashboard_runner"]

log = logging.getLogger(__name__)

PublishAck = Callable[[bytes, bytes], Awaitable[None]]


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
        return await stream_events(request, board, auth, health_every_s)

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


def dashboard_runner(app: web.Application) -> web.AppRunner:
    """The runner the dashboard serves ``app`` with: a closed page ends its stream, and the
    access log shows no query strings."""
    return web.AppRunner(app, shutdown_timeout=1, handler_cancellation=True,
                         access_log_class=AccessLog)
