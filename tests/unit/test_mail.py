"""E-mail notifier against a real local SMTP server (aiosmtpd on loopback) with STARTTLS
required and AUTH, using a throw-away CA (trustme) that the client trusts."""

from __future__ import annotations

import email
import email.policy
import random
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from agents.delivery.mail import EmailNotifier, SmtpConfig, alert_email
from agents.delivery.notify import Outcome, RetryPolicy, deliver, idempotency_key
from schemas import ConfigError

from .httpfakes import Sleeps

ALERT = {"alert_id": "naresuan-bridge:1771247185000:ab", "zone_id": "naresuan-bridge",
         "level": "critical", "previous_level": "high", "status": "escalated",
         "reason": "density", "density": 5.42,
         "ts": "2026-02-16T13:06:25.000Z",
         "message": {"th": "สะพานนเรศวร: ความหนาแน่น 5.42 คน/ตร.ม. ระดับวิกฤต",
                     "en": "Naresuan Bridge: 5.42 persons/m², critical"}}
USER, PASSWORD = "ops-centre", "s3cret-P4ss"


@dataclass
class Mailbox:
    """Receives mail; answers ``fail`` with 451 (try later) for the first calls."""

    fail: list[str] = field(default_factory=list)
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.fail:
            return self.fail.pop(0)
        raw = envelope.original_content or b""
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 OK"


def authenticator(server: Any, session: Session, envelope: Envelope, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
          and auth_data.password == PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def smtp(ca: trustme.CA) -> Iterator[tuple[Mailbox, int]]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    box = Mailbox()
    with socket.socket() as probe:  # aiosmtpd's Controller needs a concrete port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctl = Controller(box, hostname="127.0.0.1", port=port, tls_context=server_ctx,
                     require_starttls=True, authenticator=authenticator,
                     auth_require_tls=True)
    ctl.start()
    try:
        yield box, port
    finally:
        ctl.stop()


def config(ca: trustme.CA, port: int, **kw: Any) -> SmtpConfig:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    base: dict[str, Any] = {"host": "127.0.0.1", "port": port,
                            "sender": "safetour@phitsanulok.go.th",
                            "recipients": ("manager@example.org", "duty@example.org"),
                            "user": USER, "password": PASSWORD.encode(), "ssl_context": ctx,
                            "timeout_s": 5}
    base.update(kw)
    return SmtpConfig(**base)


@pytest.mark.asyncio
async def test_thai_and_english_mail_over_starttls_with_auth(
    smtp: tuple[Mailbox, int], ca: trustme.CA
) -> None:
    box, port = smtp
    box.fail = ["451 4.3.0 try again later"]
    sleeps = Sleeps()
    result = await deliver(EmailNotifier(config(ca, port)), ALERT, RetryPolicy(), sleep=sleeps,
                           rng=random.Random(3))
    assert (result.outcome, result.attempts) == (Outcome.DELIVERED, 2)
    assert len(sleeps) == 1
    [msg] = box.messages
    assert box.envelopes == [("safetour@phitsanulok.go.th",
                              ["manager@example.org", "duty@example.org"])]
    assert "วิกฤต" in msg["Subject"]
    assert "CRITICAL" in msg["Subject"]
    body = msg.get_content()
    assert body.index("สะพานนเรศวร") < body.index("Naresuan Bridge")  # Thai first
    assert "20:06:25 ICT" in body  # 13:06:25Z shown in Asia/Bangkok
    assert msg["X-Safetour-Idempotency-Key"].strip() == idempotency_key(ALERT)
    # The same alert gives the same Message-ID (a retry is recognisably the same message).
    again = alert_email(ALERT, idempotency_key(ALERT), config(ca, port))
    assert msg["Message-ID"] == again["Message-ID"]


@pytest.mark.asyncio
async def test_wrong_password_is_dead_lettered_at_once(
    smtp: tuple[Mailbox, int], ca: trustme.CA
) -> None:
    box, port = smtp
    sleeps = Sleeps()
    result = await deliver(EmailNotifier(config(ca, port, password=b"wrong")), ALERT,
                           RetryPolicy(), sleep=sleeps)
    assert (result.outcome, result.attempts, sleeps) == (Outcome.REJECTED, 1, [])
    assert "auth" in result.reason
    assert box.messages == []


@pytest.mark.asyncio
async def test_untrusted_certificate_and_permanent_refusal_are_rejected(
    smtp: tuple[Mailbox, int], ca: trustme.CA
) -> None:
    box, port = smtp
    stranger = ssl.create_default_context()  # does not trust our throw-away CA
    untrusted = await EmailNotifier(config(ca, port, ssl_context=stranger)).send(ALERT, "k")
    assert untrusted.outcome is Outcome.REJECTED
    assert "certificate" in untrusted.reason
    box.fail = ["554 5.7.1 rejected by policy"]
    refused = await EmailNotifier(config(ca, port)).send(ALERT, "k")
    assert (refused.outcome, refused.reason) == (Outcome.REJECTED, "SMTP 554: SMTPDataError")


@pytest.mark.asyncio
async def test_server_down_is_retried_then_fails() -> None:
    sleeps = Sleeps()
    cfg = SmtpConfig("127.0.0.1", "a@b.c", ("d@e.f",), port=9, timeout_s=1)
    result = await deliver(EmailNotifier(cfg), ALERT, RetryPolicy(max_attempts=3), sleep=sleeps)
    assert (result.outcome, result.attempts, len(sleeps)) == (Outcome.FAILED, 3, 2)


def test_config_from_env() -> None:
    cfg = SmtpConfig.from_env({"SAFETOUR_SMTP_HOST": "mail.example.org",
                               "SAFETOUR_SMTP_SECURITY": "tls", "SAFETOUR_MAIL_FROM": "a@b.c",
                               "SAFETOUR_MAIL_TO": "x@y.z, w@y.z", "SAFETOUR_SMTP_USER": "u",
                               "SAFETOUR_SMTP_PASSWORD": "p"})
    assert (cfg.port, cfg.recipients, cfg.password) == (465, ("x@y.z", "w@y.z"), b"p")
    with pytest.raises(ConfigError, match="SAFETOUR_SMTP_HOST"):
        SmtpConfig.from_env({})
    with pytest.raises(ConfigError, match="SECURITY"):
        SmtpConfig.from_env({"SAFETOUR_SMTP_HOST": "h", "SAFETOUR_MAIL_FROM": "a@b.c",
                             "SAFETOUR_MAIL_TO": "x@y.z", "SAFETOUR_SMTP_SECURITY": "ssl"})
    with pytest.raises(ConfigError, match="SAFETOUR_SMTP_PASSWORD"):
        SmtpConfig.from_env({"SAFETOUR_SMTP_HOST": "h", "SAFETOUR_MAIL_FROM": "a@b.c",
                             "SAFETOUR_MAIL_TO": "x@y.z", "SAFETOUR_SMTP_USER": "u"})


def test_a_late_alert_says_so_in_the_subject() -> None:
    from agents.delivery.mail import SmtpConfig  # noqa: PLC0415

    cfg = SmtpConfig("smtp.example", "a@example.org", ("b@example.org",))
    late = alert_email(ALERT, "k", cfg, delayed_s=125)
    assert str(late["Subject"]).startswith("[ล่าช้า 2 min / DELAYED 2 min] [safetour]")
    assert late["X-Safetour-Delayed"] == "125"
    assert "DELAYED" not in str(alert_email(ALERT, "k", cfg)["Subject"])
