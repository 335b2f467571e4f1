"""E-mail notifier: one plain-text message per alert over SMTP (STARTTLS or TLS, with auth).

Managers read e-mail; it is the slowest channel and the one most often behind a relay that is
briefly down, so it runs in its own consumer group like every channel (``safetour notify
--channel email``). smtplib is blocking; each send runs in a daemon thread. smtplib
sends AUTH credentials as ASCII: a password with non-ASCII characters cannot be used.

Classification follows RFC 5321 reply codes: 4xx (and dropped connections, timeouts) are worth
another try; 5xx, authentication failures and a server without STARTTLS when it is required
are dead-lettered at once. The ``Message-ID`` is derived from the idempotency key, so a retry
that did reach the server is recognisable as the same message by mail systems that
de-duplicate on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import ssl
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, cast

from schemas import ConfigError
from streams.messages import BANGKOK, LEVEL_TH

from .notify import DRILL_MARKER, Outcome, Result, delayed_marker, is_drill, read_secret

log = logging.getLogger(__name__)

SECURITY = ("starttls", "tls", "none")


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    sender: str
    recipients: tuple[str, ...]
    port: int = 587
    security: str = "starttls"  # starttls (port 587), tls (implicit, port 465) or none
    user: str | None = None
    password: bytes | None = None
    timeout_s: float = 15.0
    ssl_context: ssl.SSLContext | None = None  # None: the system's trusted CAs

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SmtpConfig:
        """``SAFETOUR_SMTP_HOST``, ``_PORT``, ``_SECURITY``, ``_USER``, ``_PASSWORD`` (or
        ``_PASSWORD_FILE``), ``_CAFILE``; ``SAFETOUR_MAIL_FROM`` and ``SAFETOUR_MAIL_TO``
        (comma-separated)."""
        host = env.get("SAFETOUR_SMTP_HOST", "").strip()
        sender = env.get("SAFETOUR_MAIL_FROM", "").strip()
        to = tuple(a.strip() for a in env.get("SAFETOUR_MAIL_TO", "").split(",") if a.strip())
        if not host or not sender or not to:
            raise ConfigError("set SAFETOUR_SMTP_HOST, SAFETOUR_MAIL_FROM and SAFETOUR_MAIL_TO")
        security = env.get("SAFETOUR_SMTP_SECURITY", "starttls").strip().lower()
        if security not in SECURITY:
            raise ConfigError(f"SAFETOUR_SMTP_SECURITY must be one of {', '.join(SECURITY)}")
        raw_port = env.get("SAFETOUR_SMTP_PORT", "").strip()
        try:
            port = int(raw_port) if raw_port else (465 if security == "tls" else 587)
        except ValueError:
            raise ConfigError(f"SAFETOUR_SMTP_PORT={raw_port!r} is not an integer") from None
        user = env.get("SAFETOUR_SMTP_USER") or None
        password = read_secret(env, "SAFETOUR_SMTP_PASSWORD") if user else None
        ctx = None
        if env.get("SAFETOUR_SMTP_CAFILE"):
            ctx = ssl.create_default_context(cafile=env["SAFETOUR_SMTP_CAFILE"])
        return cls(host, sender, to, port, security, user, password, ssl_context=ctx)


def _when(alert: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(alert["ts"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


def alert_email(alert: Mapping[str, Any], key: str, cfg: SmtpConfig,
                delayed_s: int | None = None) -> EmailMessage:
    """The message: Thai first, English after, times in Asia/Bangkok; a late alert's
    subject starts with the delayed marker (and ``X-Safetour-Delayed`` gives the seconds)."""
    level = str(alert.get("level", "?"))
    zone = str(alert.get("zone_id", "?"))
    status = str(alert.get("status", "?"))
    msg = EmailMessage()
    late = f"{delayed_marker(delayed_s)} " if delayed_s is not None else ""
    if is_drill(alert):
        late = f"{DRILL_MARKER} {late}"
    msg["Subject"] = (f"{late}[safetour] {LEVEL_TH.get(level, level)} / {level.upper()} "
                      f"{status}: {zone}")
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.recipients)
    msg["Message-ID"] = f"<{uuid.uuid5(uuid.NAMESPACE_URL, 'safetour:' + key)}@safetour>"
    when = _when(alert)
    if when is not None:
        msg["Date"] = format_datetime(when.astimezone(BANGKOK))
    msg["X-Safetour-Alert-Id"] = str(alert.get("alert_id", ""))
    msg["X-Safetour-Idempotency-Key"] = key
    if delayed_s is not None:
        msg["X-Safetour-Delayed"] = str(delayed_s)
    text = alert.get("message") or {}
    if is_drill(alert):
        msg["X-Safetour-Exercise"] = "1"
    drill = [DRILL_MARKER, "ฝึกซ้อม ไม่ใช่เหตุจริง / This is a drill, not a real alert.", ""]
    lines = (drill if is_drill(alert) else []) + [
             str(text.get("th", "")), "", str(text.get("en", "")), "", "--",
             f"alert_id: {alert.get('alert_id', '')}", f"zone: {zone}",
             f"level: {level} ({status}, reason {alert.get('reason', 'density')})",
             f"density: {alert.get('density', '?')} persons/m²"]
    if when is not None:
        lines.append(f"time: {when.astimezone(BANGKOK):%Y-%m-%d %H:%M:%S} ICT")
    msg.set_content("\n".join(lines).strip() + "\n", charset="utf-8")
    return msg


async def _in_daemon_thread(fn: Callable[[], Result]) -> Result:
    """Run blocking ``fn`` in a daemon thread of its own: a relay that hangs past every
    timeout never keeps the process from exiting (the loop's default executor would)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Result] = loop.create_future()

    def settle(result: Result | None, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(cast(Result, result))

    def run() -> None:
        try:
            result, exc = fn(), None
        except Exception as e:  # handed to the awaiting task
            result, exc = None, e
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, exc)

    threading.Thread(target=run, name="safetour-smtp", daemon=True).start()
    return await fut


def _classify(code: int, what: str) -> Result:
    if 400 <= code < 500:
        return Result(Outcome.RETRY, f"SMTP {code}: {what}")
    return Result(Outcome.REJECTED, f"SMTP {code}: {what}")


@dataclass
class EmailNotifier:
    cfg: SmtpConfig
    channel: str = "email"

    async def send(self, alert: Mapping[str, Any], key: str, *,
                   delayed_s: int | None = None) -> Result:
        msg = alert_email(alert, key, self.cfg, delayed_s)
        return await _in_daemon_thread(lambda: self._send(msg))

    def _send(self, msg: EmailMessage) -> Result:
        cfg = self.cfg
        ctx = cfg.ssl_context or ssl.create_default_context()
        try:
            smtp: smtplib.SMTP
            if cfg.security == "tls":
                smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_s, context=ctx)
            else:
                smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s)
            with smtp:
                if cfg.security == "starttls":
                    smtp.starttls(context=ctx)
                if cfg.user:
                    smtp.login(cfg.user, (cfg.password or b"").decode())
                refused = smtp.send_message(msg, cfg.sender, list(cfg.recipients))
        except smtplib.SMTPAuthenticationError as exc:
            return Result(Outcome.REJECTED, f"SMTP auth failed: {exc.smtp_code}")
        except smtplib.SMTPNotSupportedError as exc:
            return Result(Outcome.REJECTED, f"SMTP server lacks a feature we need: {exc}")
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [c for c, _ in exc.recipients.values()]
            return _classify(min(codes) if codes else 550, "all recipients refused")
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            return _classify(exc.smtp_code, type(exc).__name__)
        except smtplib.SMTPResponseException as exc:
            return _classify(exc.smtp_code, type(exc).__name__)
        except ssl.SSLCertVerificationError as exc:
            return Result(Outcome.REJECTED, f"TLS certificate not trusted: {exc.verify_message}")
        except (smtplib.SMTPException, OSError) as exc:  # dropped, refused, timed out
            return Result(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
        if refused:
            log.warning("email: some recipients refused: %s", sorted(refused))
        return Result(Outcome.DELIVERED, f"{len(cfg.recipients) - len(refused)} recipients")
