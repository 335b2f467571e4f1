"""Dashboard sign-in (agents/dashboard/dashboard_auth.py): server-side sessions with a fake clock,
the one-time link, the login rate limit, cookie flags, security headers and no secret in any log,
against a real local aiohttp server (no Kafka)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import trustme
from aiohttp import web

from agents.config import Settings, repo_root
from agents.dashboard.board import Board
from agents.dashboard.dashboard_auth import (
    COOKIE,
    CSP,
    ONCE_S,
    Auth,
    AuthConfig,
    LoginLimiter,
    Sessions,
)
from agents.dashboard.handlers import build_web_app, dashboard_runner
from schemas import ConfigError, load_zones

TOKEN = "t0ken-for-somchai-0123456789"
OPERATORS = {TOKEN: "somchai", "t0ken-for-malee-0123456789ab": "malee"}


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- sessions, one-time codes and the limiter, on a fake clock -------------------------------

def test_sessions_expire_absolutely_and_when_idle_and_can_be_revoked() -> None:
    clock = FakeClock()
    s = Sessions(AuthConfig(session_s=100, idle_s=30), clock)
    sid = s.create("somchai")
    assert len(sid) >= 43
    assert sid != TOKEN
    assert sid not in s._sessions  # keyed by a hash, not the id itself
    for _ in range(4):  # used every 20 s: idle never reached ...
        clock.t += 20
        assert s.operator(sid) == "somchai"
    clock.t += 20  # ... but 100 s after sign-in it ends anyway
    assert s.operator(sid) is None
    idle = s.create("somchai")
    clock.t += 29.9
    assert s.operator(idle) == "somchai"
    clock.t += 30
    assert s.operator(idle) is None  # 30 s unused
    gone = s.create("malee")
    assert s.revoke(gone)
    assert s.operator(gone) is None
    assert not s.revoke(gone)
    assert s.operator("") is None
    assert s.operator("made-up") is None


def test_sessions_are_bounded_the_oldest_evicted() -> None:
    s = Sessions(AuthConfig(sessions_max=3), FakeClock())
    sids = [s.create(f"op{i}") for i in range(5)]
    assert len(s) == 3
    assert [s.operator(x) for x in sids] == [None, None, "op2", "op3", "op4"]


def test_a_one_time_code_works_once_and_expires() -> None:
    clock = FakeClock()
    s = Sessions(AuthConfig(), clock)
    code = s.one_time_code("demo")
    assert s.redeem(code) == "demo"
    assert s.redeem(code) is None  # used up
    late = s.one_time_code("demo")
    clock.t += ONCE_S
    assert s.redeem(late) is None
    assert s.redeem("") is None


def test_the_limiter_counts_failures_per_address_and_overall() -> None:
    clock = FakeClock()
    lim = LoginLimiter(AuthConfig(failures_per_address=5, failures_overall=8,
                                  failure_window_s=60), clock)
    for _ in range(4):
        lim.failed("10.0.0.1")
        clock.t += 1
    assert lim.retry_after("10.0.0.1") is None
    lim.failed("10.0.0.1")  # the fifth within a minute
    assert lim.retry_after("10.0.0.1") == 56  # the first of the five leaves the window then
    assert lim.retry_after("10.0.0.2") is None  # another address may still try
    clock.t += 56
    assert lim.retry_after("10.0.0.1") is None
    # Overall: 8 failures from many addresses block everyone.
    clock.t += 120
    for i in range(8):
        lim.failed(f"10.0.1.{i}")
    assert lim.retry_after("10.9.9.9") == 60


def test_session_settings_come_from_the_environment() -> None:
    s = Settings.from_env({"SAFETOUR_DASHBOARD_SESSION_S": "60", "SAFETOUR_DASHBOARD_IDLE_S": "5",
                           "SAFETOUR_DASHBOARD_TRUST_PROXY": "1"})
    assert AuthConfig.of(s) == AuthConfig(session_s=60, idle_s=5, trust_proxy=True)
    assert AuthConfig.of(Settings.from_env({})) == AuthConfig()
    with pytest.raises(ConfigError):
        Settings.from_env({"SAFETOUR_DASHBOARD_IDLE_S": "0"})


# -- over HTTP ------------------------------------------------------------------------------

class Server:
    def __init__(self, url: str, auth: Auth, clock: FakeClock) -> None:
        self.url, self.auth, self.clock = url, auth, clock


async def _no_publish(key: bytes, value: bytes) -> None:
    raise AssertionError("no acks in this test")


async def _serve(config: AuthConfig, ssl_context: ssl.SSLContext | None = None
                 ) -> tuple[web.AppRunner, Server]:
    clock = FakeClock()
    auth = Auth(OPERATORS, config, sessions=Sessions(config, clock),
                limiter=LoginLimiter(config, clock))
    board = Board(load_zones(repo_root() / "deploy/zones/phitsanulok.yaml"))
    runner = dashboard_runner(build_web_app(board, OPERATORS, _no_publish, auth=auth,
                                            health_every_s=0.2))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scheme = "https" if ssl_context else "http"
    return runner, Server(f"{scheme}://127.0.0.1:{port}", auth, clock)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    runner, srv = await _serve(AuthConfig(session_s=3600, idle_s=600))
    try:
        yield srv
    finally:
        await runner.cleanup()


def jar() -> aiohttp.CookieJar:
    return aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP-address host


async def sign_in(s: aiohttp.ClientSession, url: str, token: str = TOKEN) -> str:
    async with s.post(f"{url}/login", data={"token": token}, allow_redirects=False) as r:
        assert (r.status, r.headers["Location"]) == (302, "/")
        return r.cookies[COOKIE].value


@pytest.mark.asyncio
async def test_the_cookie_is_a_session_id_and_sign_out_revokes_it(server: Server) -> None:
    url = server.url
    async with aiohttp.ClientSession(cookie_jar=jar()) as s:
        sid = await sign_in(s, url)
        assert sid != TOKEN
        assert TOKEN not in sid
        assert len(sid) >= 43
        async with s.get(f"{url}/api/me") as r:
            assert (r.status, await r.json()) == (200, {"operator": "somchai"})
        async with s.get(f"{url}/logout", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "/login")
    # Replaying the old cookie: refused, the session is gone on the server.
    async with aiohttp.ClientSession(headers={"Cookie": f"{COOKIE}={sid}"}) as replay:
        async with replay.get(f"{url}/api/me") as r:
            assert r.status == 401
        async with replay.get(f"{url}/", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "/login")
    # A new sign-in gets a new id, and the one it replaces stops working.
    async with aiohttp.ClientSession(cookie_jar=jar()) as s:
        first = await sign_in(s, url)
        second = await sign_in(s, url, "t0ken-for-malee-0123456789ab")
        assert first != second
        async with s.get(f"{url}/api/me") as r:
            assert (await r.json())["operator"] == "malee"
    async with aiohttp.ClientSession(headers={"Cookie": f"{COOKIE}={first}"}) as replay, \
            replay.get(f"{url}/api/me") as r:
        assert r.status == 401


@pytest.mark.asyncio
async def test_sessions_expire_over_http(server: Server) -> None:
    async with aiohttp.ClientSession(cookie_jar=jar()) as s:
        await sign_in(s, server.url)
        server.clock.t += 599  # idle limit 600 s
        async with s.get(f"{server.url}/api/me") as r:
            assert r.status == 200
        server.clock.t += 600
        async with s.get(f"{server.url}/api/me") as r:
            assert r.status == 401
        await sign_in(s, server.url)
        for _ in range(7):  # used every 500 s; absolute limit 3600 s
            server.clock.t += 500
            async with s.get(f"{server.url}/api/me") as r:
                assert r.status == 200
        server.clock.t += 101
        async with s.get(f"{server.url}/api/me") as r:
            assert r.status == 401


@pytest.mark.asyncio
async def test_a_revoked_session_ends_its_event_stream(server: Server) -> None:
    async with aiohttp.ClientSession(cookie_jar=jar()) as s:
        sid = await sign_in(s, server.url)
        async with s.get(f"{server.url}/events") as stream:
            assert stream.status == 200
            assert (await asyncio.wait_for(stream.content.readline(), 5)).startswith(b"event:")
            assert server.auth.sessions.revoke(sid)

            async def drain() -> None:
                while await stream.content.readline():
                    pass

            await asyncio.wait_for(drain(), 5)  # the server closed it


@pytest.mark.asyncio
async def test_tokens_never_sign_in_from_a_url_but_the_one_time_link_does_once(
    server: Server
) -> None:
    url = server.url
    async with aiohttp.ClientSession(cookie_jar=jar()) as s:
        async with s.get(f"{url}/login?token={TOKEN}", allow_redirects=False) as r:
            assert r.status == 400
            assert COOKIE not in r.cookies
        code = server.auth.sessions.one_time_code("somchai")
        async with s.get(f"{url}/login?once={code}", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "/")
            assert r.cookies[COOKIE].value not in (code, TOKEN)
        async with s.get(f"{url}/api/me") as r:
            assert r.status == 200
    async with aiohttp.ClientSession(cookie_jar=jar()) as other, \
            other.get(f"{url}/login?once={code}", allow_redirects=False) as r:
        assert r.status == 401
        assert "already used" in await r.text()
        assert COOKIE not in r.cookies


@pytest.mark.asyncio
async def test_failed_sign_ins_are_rate_limited(server: Server) -> None:
    url = server.url
    async with aiohttp.ClientSession(cookie_jar=jar()) as s:
        for _ in range(4):
            async with s.post(f"{url}/login", data={"token": "wrong-token-0123456789"}) as r:
                assert r.status == 401
        async with s.get(f"{url}/api/me", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401  # a wrong Bearer token counts too: the fifth
        async with s.post(f"{url}/login", data={"token": TOKEN},
                          allow_redirects=False) as r:
            assert r.status == 429  # even the right token, until the minute is over
            assert int(r.headers["Retry-After"]) == 60
            assert COOKIE not in r.cookies
        async with s.get(f"{url}/api/me", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 429
        server.clock.t += 60
        await sign_in(s, url)


@pytest.mark.asyncio
async def test_every_response_carries_the_security_headers(server: Server) -> None:
    async with aiohttp.ClientSession(cookie_jar=jar()) as s:
        await sign_in(s, server.url)
        for path in ("/", "/login", "/static/app.js", "/healthz", "/nope", "/api/me"):
            async with s.get(f"{server.url}{path}") as r:
                assert r.headers["Content-Security-Policy"] == CSP, path
                assert r.headers["X-Content-Type-Options"] == "nosniff", path
                assert r.headers["Referrer-Policy"] == "no-referrer", path
        async with s.get(f"{server.url}/events") as r:
            assert r.headers["Content-Security-Policy"] == CSP
    for directive in ("default-src 'self'", "frame-ancestors 'none'", "script-src 'self'"):
        assert directive in CSP
    assert "unsafe-inline" not in CSP


def _cookie_header(r: aiohttp.ClientResponse) -> str:
    [header] = [v for v in r.headers.getall("Set-Cookie") if v.startswith(COOKIE + "=")]
    return header.lower()


@pytest.mark.asyncio
async def test_secure_cookie_over_tls_or_behind_a_trusted_proxy() -> None:
    proxied = {"X-Forwarded-Proto": "https"}
    # Plain HTTP, and a proxy's word that is not trusted: no Secure (but HttpOnly, Strict).
    runner, srv = await _serve(AuthConfig())
    try:
        async with aiohttp.ClientSession() as s:
            for headers in ({}, proxied):
                async with s.post(f"{srv.url}/login", data={"token": TOKEN}, headers=headers,
                                  allow_redirects=False) as r:
                    h = _cookie_header(r)
                    assert "httponly" in h
                    assert "samesite=strict" in h
                    assert "secure" not in h.replace("samesite", "")
    finally:
        await runner.cleanup()
    runner, srv = await _serve(AuthConfig(trust_proxy=True))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{srv.url}/login", data={"token": TOKEN}, headers=proxied,
                              allow_redirects=False) as r:
                assert "; secure" in _cookie_header(r)
            async with s.post(f"{srv.url}/login", data={"token": TOKEN},
                              allow_redirects=False) as r:
                assert "; secure" not in _cookie_header(r)
    finally:
        await runner.cleanup()
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    runner, srv = await _serve(AuthConfig(), server_ctx)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as s, \
                s.post(f"{srv.url}/login", data={"token": TOKEN}, allow_redirects=False) as r:
            h = _cookie_header(r)
            assert "; secure" in h
            assert "httponly" in h
            assert "samesite=strict" in h
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_no_token_session_id_or_code_in_any_log(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = server.url
    secrets_seen: list[str] = [TOKEN, "wrong-token-0123456789"]
    async with aiohttp.ClientSession(cookie_jar=jar()) as s:
        async with s.post(f"{url}/login", data={"token": "wrong-token-0123456789"}) as r:
            assert r.status == 401
        secrets_seen.append(await sign_in(s, url))
        async with s.get(f"{url}/login?token={TOKEN}") as r:
            assert r.status == 400
        async with s.get(f"{url}/") as r:
            assert r.status == 200
        async with s.get(f"{url}/logout") as r:
            assert r.status == 200
        code = server.auth.sessions.one_time_code("somchai")
        secrets_seen.append(code)
        for _ in range(2):
            async with s.get(f"{url}/login?once={code}", allow_redirects=False) as r:
                if COOKIE in r.cookies:
                    secrets_seen.append(r.cookies[COOKIE].value)
        async with s.get(f"{url}/api/me", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
    text = caplog.text
    assert "signed in" in text
    assert "failed sign-in" in text
    assert "GET /login" in text  # the access log ran, without its query strings
    for secret in secrets_seen:
        assert secret not in text
    assert all(secret not in str(rec.args) for rec in caplog.records
               for secret in secrets_seen)


