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
import logging
import secrets
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from schemas import ConfigError, Thresholds
from streams import MOVING_DEFAULTS, STANDING_DEFAULTS

from ..metrics import Metrics
from ..rejects import InternalRejects
from ..shelves import LOOKBACK_S
from .board import STALE_S, Board
from .dashboard_auth import Auth, AuthConfig
from .follower import follow_retrying
from .handlers import build_web_app, dashboard_runner

log = logging.getLogger(__name__)

STOP_S = 5.0  # SIGTERM/SIGINT to exit, at most (README "The operations-centre dashboard")


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
