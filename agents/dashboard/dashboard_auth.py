"""Signing in to the operations-centre dashboard (agents/dashboard/dashboard.py).

- **Server-side sessions.** The cookie holds a random session id
  (``secrets.token_urlsafe(32)``), never an operator's token. Sessions live in the dashboard
  process, at most ``sessions_max`` (the oldest is evicted), each with an absolute expiry
  (``SAFETOUR_DASHBOARD_SESSION_S``, 8 h) and an idle expiry (``SAFETOUR_DASHBOARD_IDLE_S``,
  30 min; an open page's event stream counts as activity). Sign-out revokes the session on the
  server: a copy of the cookie no longer works. The table is keyed by a hash of the id.
- **Tokens only in the form.** ``POST /login`` takes the token; ``?token=`` in a URL is refused.
  The one exception is a one-time link ``/login?once=CODE`` (what ``safetour run`` prints for
  its demo operator): it signs in once and is then used up.
- **Login rate limit.** ``FAILURES_PER_ADDRESS`` failed sign-ins a minute from one client
  address, or ``FAILURES_OVERALL`` from all, and further attempts get 429 with Retry-After
  until the minute has passed. Tokens are compared with ``hmac.compare_digest``.
- **Cookie flags.** HttpOnly and SameSite=Strict always; ``Secure`` when the request came over
  TLS, or with ``X-Forwarded-Proto: https`` from a proxy the setting
  ``SAFETOUR_DASHBOARD_TRUST_PROXY=1`` trusts (which then also gives the client address, the
  last entry of ``X-Forwarded-For``).
- **Headers** on every response: a Content-Security-Policy (no inline script or style, no
  framing), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``.

Neither a token nor a session id nor a one-time code is ever logged: the access log
(:class:`AccessLog`) writes paths without their query string.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

log = logging.getLogger(__name__)

COOKIE = "safetour_session"
SESSION_S = 8 * 3600.0  # absolute lifetime of a session (SAFETOUR_DASHBOARD_SESSION_S)
IDLE_S = 30 * 60.0  # a session unused this long ends (SAFETOUR_DASHBOARD_IDLE_S)
SESSIONS_MAX = 1000  # sessions kept; a new one evicts the oldest
ONCE_S = 3600.0  # a one-time link not used within this is void
ONCE_MAX = 16  # one-time links kept
FAILURES_PER_ADDRESS = 5  # failed sign-ins a window from one address, then 429
FAILURES_OVERALL = 100  # ... from all addresses together
FAILURE_WINDOW_S = 60.0
ADDRESSES_MAX = 10_000  # addresses whose failures are remembered (the oldest forgotten)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}

OPERATOR = web.RequestKey("operator", str)
SESSION_ID = web.RequestKey("session_id", str)  # absent for Bearer requests
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class AuthConfig:
    session_s: float = SESSION_S
    idle_s: float = IDLE_S
    sessions_max: int = SESSIONS_MAX
    trust_proxy: bool = False
    failures_per_address: int = FAILURES_PER_ADDRESS
    failures_overall: int = FAILURES_OVERALL
    failure_window_s: float = FAILURE_WINDOW_S

    @classmethod
    def of(cls, settings: Any) -> AuthConfig:
        """From the dashboard settings (agents/config.py), defaults where absent."""
        return cls(session_s=getattr(settings, "dashboard_session_s", SESSION_S),
                   idle_s=getattr(settings, "dashboard_idle_s", IDLE_S),
                   trust_proxy=getattr(settings, "dashboard_trust_proxy", False))


def _key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(slots=True)
class _Session:
    operator: str
    created: float
    seen: float


class Sessions:
    """Sessions and one-time sign-in codes, in memory, bounded; ``clock`` is injectable."""

    def __init__(self, config: AuthConfig = AuthConfig(), clock: Clock = time.monotonic
                 ) -> None:
        self.config = config
        self.clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # oldest first
        self._once: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, operator: str) -> str:
        """A new session for ``operator``; its id (for the cookie)."""
        now = self.clock()
        self._prune(now)
        while len(self._sessions) >= max(self.config.sessions_max, 1):
            self._sessions.popitem(last=False)
        sid = secrets.token_urlsafe(32)
        self._sessions[_key(sid)] = _Session(operator, now, now)
        return sid

    def operator(self, sid: str) -> str | None:
        """Whose session ``sid`` is, if it is live (and marks it used); None if unknown,
        revoked or expired (an expired one is dropped)."""
        if not sid:
            return None
        k = _key(sid)
        s = self._sessions.get(k)
        if s is None:
            return None
        now = self.clock()
        if self._expired(s, now):
            del self._sessions[k]
            return None
        s.seen = now
        return s.operator

    def revoke(self, sid: str) -> bool:
        return self._sessions.pop(_key(sid), None) is not None

    def one_time_code(self, operator: str) -> str:
        """A code that signs ``operator`` in once (``/login?once=CODE``) within ONCE_S."""
        while len(self._once) >= ONCE_MAX:
            self._once.popitem(last=False)
        code = secrets.token_urlsafe(32)
        self._once[_key(code)] = (operator, self.clock() + ONCE_S)
        return code

    def redeem(self, code: str) -> str | None:
        """The operator of a live one-time code, which is used up; None otherwise."""
        found = self._once.pop(_key(code), None) if code else None
        if found is None or self.clock() >= found[1]:
            return None
        return found[0]

    def _expired(self, s: _Session, now: float) -> bool:
        return (now - s.created >= self.config.session_s
                or now - s.seen >= self.config.idle_s)

    def _prune(self, now: float) -> None:
        for k in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[k]


class LoginLimiter:
    """Failed sign-ins in a sliding window, per client address and overall."""

    def __init__(self, config: AuthConfig = AuthConfig(), clock: Clock = time.monotonic
                 ) -> None:
        self.config = config
        self.clock = clock
        self._by_address: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None if it may now."""
        now = self.clock()
        cutoff = now - self.config.failure_window_s
        waits = []
        for q, limit in ((self._by_address.get(address), self.config.failures_per_address),
                         (self._all, self.config.failures_overall)):
            if q is None:
                continue
            while q and q[0] <= cutoff:
                q.popleft()
            if len(q) >= limit:
                waits.append(q[-limit] - cutoff)
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, address: str) -> None:
        now = self.clock()
        q = self._by_address.pop(address, None) or deque()
        q.append(now)
        while len(q) > self.config.failures_per_address:
            q.popleft()
        self._by_address[address] = q  # the most recent last
        while len(self._by_address) > ADDRESSES_MAX:
            self._by_address.popitem(last=False)
        self._all.append(now)
        while len(self._all) > self.config.failures_overall:
            self._all.popleft()


def token_operator(operators: Mapping[str, str], token: str) -> str | None:
    """The operator whose token ``token`` is: every candidate compared in constant time."""
    found = None
    given = token.encode()
    for known, name in operators.items():
        if hmac.compare_digest(known.encode(), given) and given:
            found = name
    return found


def client_address(request: web.Request, trust_proxy: bool) -> str:
    if trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1].strip()
        if forwarded:
            return forwarded
    return request.remote or "?"


def is_secure(request: web.Request, trust_proxy: bool) -> bool:
    """Over TLS, or forwarded from TLS by a trusted proxy."""
    if request.secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto", "").split(",", 1)[0].strip().lower()
    return trust_proxy and proto == "https"


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, errors and redirects included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


class AccessLog(AbstractAccessLogger):
    """aiohttp's access log without query strings (a one-time code must not be logged)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float
            ) -> None:
        self.logger.info("%s %s %s %s %.3fs", request.remote, request.method, request.path,
                         response.status, time)


PUBLIC = frozenset({"/login", "/healthz"})  # and /static/: code, styles and fonts only


class Auth:
    """The sign-in middleware and the /login and /logout routes."""

    def __init__(self, operators: Mapping[str, str], config: AuthConfig = AuthConfig(), *,
                 sessions: Sessions | None = None, limiter: LoginLimiter | None = None
                 ) -> None:
        self.operators = operators
        self.config = config
        self.sessions = sessions if sessions is not None else Sessions(config)
        self.limiter = limiter if limiter is not None else LoginLimiter(config)

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self.require_login)
        app.on_response_prepare.append(security_headers)
        app.router.add_get("/login", self.login_get)
        app.router.add_post("/login", self.login_post)
        app.router.add_get("/logout", self.logout)
        app.router.add_post("/logout", self.logout)

    def still_signed_in(self, request: web.Request) -> bool:
        """For long requests (the event stream): is its session still live? (Keeps it so.)"""
        sid = request.get(SESSION_ID)
        return sid is None or self.sessions.operator(sid) is not None

    @web.middleware
    async def require_login(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in PUBLIC or request.path.startswith("/static/"):
            return await handler(request)  # type: ignore[no-any-return]
        name: str | None = None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):  # API clients: the token itself, rate-limited
            address = client_address(request, self.config.trust_proxy)
            wait = self.limiter.retry_after(address)
            if wait is not None:
                return web.json_response({"error": "too many failed sign-ins"}, status=429,
                                         headers={"Retry-After": str(wait)})
            name = token_operator(self.operators, auth[7:].strip())
            if name is None:
                self.limiter.failed(address)
        else:
            sid = request.cookies.get(COOKIE, "")
            name = self.sessions.operator(sid)
            if name is not None:
                request[SESSION_ID] = sid
        if name is None:
            if request.path.startswith(("/api/", "/events")):
                return web.json_response({"error": "login required"}, status=401)
            raise web.HTTPFound("/login")
        request[OPERATOR] = name
        return await handler(request)  # type: ignore[no-any-return]

    def page(self, error: str = "", status: int = 200, headers: Mapping[str, str] | None = None
             ) -> web.Response:
        text = files("agents.dashboard").joinpath("web", "login.html").read_text(encoding="utf-8")
        return web.Response(text=text.replace("{{error}}", html.escape(error)),
                            content_type="text/html", status=status,
                            headers={"Cache-Control": "no-store", **(headers or {})})

    def _refused(self, request: web.Request) -> web.Response | None:
        wait = self.limiter.retry_after(client_address(request, self.config.trust_proxy))
        if wait is None:
            return None
        return self.page("ลองหลายครั้งเกินไป กรุณารอสักครู่ / Too many attempts: wait a minute",
                         429, {"Retry-After": str(wait)})

    def _failed(self, request: web.Request, error: str) -> web.Response:
        address = client_address(request, self.config.trust_proxy)
        self.limiter.failed(address)
        log.warning("dashboard: failed sign-in from %s", address)
        return self.page(error, 401)

    def _signed_in(self, request: web.Request, operator: str) -> web.Response:
        old = request.cookies.get(COOKIE)
        if old:
            self.sessions.revoke(old)  # a new session id at every sign-in
        sid = self.sessions.create(operator)
        resp = web.Response(status=302, headers={"Location": "/", "Cache-Control": "no-store"})
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict",
                        secure=is_secure(request, self.config.trust_proxy),
                        max_age=max(int(self.config.session_s), 1), path="/")
        log.info("dashboard: %s signed in", operator)
        return resp

    async def login_get(self, request: web.Request) -> web.StreamResponse:
        if "token" in request.query:
            return self.page("ใส่โทเค็นในแบบฟอร์ม ไม่ใช่ในลิงก์ / "
                             "Type the token in the form, not in a link", 400)
        if "once" not in request.query:
            return self.page()
        refused = self._refused(request)
        if refused is not None:
            return refused
        operator = self.sessions.redeem(request.query["once"])
        if operator is None:
            return self._failed(request, "ลิงก์นี้ถูกใช้แล้วหรือหมดอายุ / "
                                         "This sign-in link was already used or has expired")
        return self._signed_in(request, operator)

    async def login_post(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        form = await request.post()
        operator = token_operator(self.operators, str(form.get("token", "")).strip())
        if operator is None:
            return self._failed(request, "โทเค็นไม่ถูกต้อง / Invalid token")
        return self._signed_in(request, operator)

    async def logout(self, request: web.Request) -> web.StreamResponse:
        sid = request.cookies.get(COOKIE)
        if sid and self.sessions.revoke(sid):
            log.info("dashboard: signed out")
        resp = web.Response(status=302, headers={"Location": "/login"})
        resp.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
        return resp
