"""The dashboard's Server-Sent Events stream (``GET /events``): ``state`` and ``health`` on
every connect, the alerts and acks the page missed (``Last-Event-ID``), then the board's
events as they come, and a ``health`` event every ``health_every_s`` (also the keepalive),
until the page closes, its session ends or the server stops.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .board import Board
from .dashboard_auth import Auth

__all__ = ["HEALTH_EVERY_S", "stream_events"]

HEALTH_EVERY_S = 3.0  # a health event to every page this often (also the stream's keepalive)


def _sse(kind: str, data: bytes, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\n".encode() + b"data: " + data + b"\n\n"


async def stream_events(request: web.Request, board: Board, auth: Auth,
                        health_every_s: float = HEALTH_EVERY_S) -> web.StreamResponse:
    """Serve one page's event stream from ``board`` until it ends."""
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
