"""The one Kafka client factory: every safetour component builds its Kafka clients here.

:class:`KafkaConfig` holds the bootstrap servers and the connection's security, read from
the environment (``SAFETOUR_KAFKA_*``, README "Kafka connection") by
:meth:`KafkaConfig.from_env`, which ``Settings.kafka`` calls. It builds:

- :meth:`~KafkaConfig.admin`, :meth:`~KafkaConfig.producer` (idempotent, ``acks=all``) and
  :meth:`~KafkaConfig.consumer` (no group, no auto-commit) aiokafka clients;
- :meth:`~KafkaConfig.faust_kwargs`, the broker settings of a faust app (the URL, the
  credentials and the TLS context); the apps' transports (``agents/worker/transport.py``) make
  faust's producer idempotent too.

faust hands an app's ``broker_credentials`` to aiokafka as they are, and a
``SASLCredentials`` without an ``ssl_context`` means SASL_PLAINTEXT, silently: a password
sent in clear where TLS was asked for. :meth:`~KafkaConfig.faust_kwargs` always puts the TLS
context into the credentials, and checks what faust will make of them before it returns.

Every builder installs :func:`agents.kafka_safety.install_safe_fetch` first, so no client of
this process can be stopped by a record batch it cannot decode.

A client that cannot reach the cluster within ``connect_timeout_s``
(``SAFETOUR_KAFKA_CONNECT_TIMEOUT_S``) raises :class:`KafkaUnreachable` from
:meth:`~KafkaConfig.start`: one line naming the address, never a password.

Secrets (the SASL password) are held in :class:`Secret`, which never shows its value in a
``repr``, a ``str`` or a log line; the config's ``repr`` shows the user, never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from schemas import ConfigError, SafetourError

from .kafka_safety import install_safe_fetch

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_MECHANISM = "SCRAM-SHA-512"
CONNECT_TIMEOUT_S = 15.0
_SECURITY_KEYS = frozenset({"security_protocol", "ssl_context", "sasl_mechanism",
                            "sasl_plain_username", "sasl_plain_password"})


class KafkaUnreachable(SafetourError):
    """The Kafka cluster could not be reached (or refused the connection) in time."""


class KafkaDenied(KafkaUnreachable):
    """The cluster refused an operation to these credentials (an ACL is missing)."""


class Secret:
    """A secret string: ``repr`` and ``str`` show ``***``; :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:  # never pickled into a file or a message by accident
        raise TypeError("a Secret cannot be pickled")


class _Client(Protocol):
    async def start(self) -> None: ...


def _one_line(exc: BaseException) -> str:
    """The error on one line, its type named once."""
    name = type(exc).__name__
    # aiokafka's broker errors read "[Error 29] TopicAuthorizationFailedError: ...".
    text = re.sub(r"^\[Error -?\d+\] ", "", " ".join(str(exc).split()))
    text = text.removeprefix(f"{name}: ").removeprefix(name)
    if text.startswith("Unable to bootstrap from"):  # aiokafka: no address answered
        return f"no broker answered ({name})"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused ({name})"
    return f"{name}: {text}" if text else name


def _file(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    p = Path(raw)
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{name}={raw}: cannot read it ({exc.strerror or exc})") from None
    return p


def _password(env: Mapping[str, str]) -> Secret | None:
    direct = env.get("SAFETOUR_KAFKA_PASSWORD", "")
    path = env.get("SAFETOUR_KAFKA_PASSWORD_FILE", "").strip()
    if direct and path:
        raise ConfigError("set SAFETOUR_KAFKA_PASSWORD or SAFETOUR_KAFKA_PASSWORD_FILE, "
                          "not both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
                type(exc).__name__
            raise ConfigError(f"SAFETOUR_KAFKA_PASSWORD_FILE={path}: cannot read it "
                              f"({why})") from None
        if not value:
            raise ConfigError(f"SAFETOUR_KAFKA_PASSWORD_FILE={path} is empty")
        return Secret(value)
    return Secret(direct) if direct else None


def kafka_url(bootstrap: str) -> str:
    """``host1:9092,host2:9092`` as faust's broker URL list."""
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Where the cluster is and how to connect to it securely (see the module)."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    user: str | None = None
    password: Secret | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    connect_timeout_s: float = CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        self._check()

    # -- parsing ---------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str], bootstrap: str) -> KafkaConfig:
        """The connection ``env`` describes (``SAFETOUR_KAFKA_*``), to ``bootstrap``.
        ConfigError, one line, for a value it cannot use; files are checked readable."""
        protocol = env.get("SAFETOUR_KAFKA_SECURITY_PROTOCOL", "").strip().upper() \
            or "PLAINTEXT"
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"SAFETOUR_KAFKA_SECURITY_PROTOCOL={protocol!r}: use one of "
                              f"{', '.join(SECURITY_PROTOCOLS)}")
        mechanism = env.get("SAFETOUR_KAFKA_SASL_MECHANISM", "").strip().upper() or None
        if mechanism is not None and mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"SAFETOUR_KAFKA_SASL_MECHANISM={mechanism!r}: use one of "
                              f"{', '.join(SASL_MECHANISMS)}")
        raw_timeout = env.get("SAFETOUR_KAFKA_CONNECT_TIMEOUT_S", "").strip()
        try:
            timeout = float(raw_timeout) if raw_timeout else CONNECT_TIMEOUT_S
        except ValueError:
            raise ConfigError(f"SAFETOUR_KAFKA_CONNECT_TIMEOUT_S={raw_timeout!r} is not a "
                              "number") from None
        if not timeout > 0:
            raise ConfigError("SAFETOUR_KAFKA_CONNECT_TIMEOUT_S must be > 0")
        sasl = protocol.startswith("SASL_")
        return cls(
            bootstrap=bootstrap,
            security_protocol=protocol,
            sasl_mechanism=(mechanism or DEFAULT_MECHANISM) if sasl else mechanism,
            user=env.get("SAFETOUR_KAFKA_USER", "").strip() or None,
            password=_password(env),
            ca_file=_file(env, "SAFETOUR_KAFKA_CA_FILE"),
            cert_file=_file(env, "SAFETOUR_KAFKA_CERT_FILE"),
            key_file=_file(env, "SAFETOUR_KAFKA_KEY_FILE"),
            connect_timeout_s=timeout,
        )

    def _check(self) -> None:
        if not self.bootstrap.strip():
            raise ConfigError("no Kafka bootstrap servers")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"security protocol {self.security_protocol!r}: use one of "
                              f"{', '.join(SECURITY_PROTOCOLS)}")
        p = f"SAFETOUR_KAFKA_SECURITY_PROTOCOL={self.security_protocol}"
        if self.sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(f"SASL mechanism {self.sasl_mechanism!r}: use one of "
                                  f"{', '.join(SASL_MECHANISMS)}")
            if not self.user or self.password is None:
                raise ConfigError(f"{p} needs SAFETOUR_KAFKA_USER and SAFETOUR_KAFKA_PASSWORD "
                                  "(or SAFETOUR_KAFKA_PASSWORD_FILE)")
        else:
            # A setting that would do nothing is a mistake: the operator meant something.
            unused = [n for n, v in (("SAFETOUR_KAFKA_SASL_MECHANISM", self.sasl_mechanism),
                                     ("SAFETOUR_KAFKA_USER", self.user),
                                     ("SAFETOUR_KAFKA_PASSWORD", self.password)) if v]
            if unused:
                raise ConfigError(f"{p} uses no SASL, but {', '.join(unused)} is set; use "
                                  "SASL_SSL (or SASL_PLAINTEXT)")
        if not self.tls:
            unused = [n for n, v in (("SAFETOUR_KAFKA_CA_FILE", self.ca_file),
                                     ("SAFETOUR_KAFKA_CERT_FILE", self.cert_file),
                                     ("SAFETOUR_KAFKA_KEY_FILE", self.key_file)) if v]
            if unused:
                raise ConfigError(f"{p} uses no TLS, but {', '.join(unused)} is set; use SSL "
                                  "or SASL_SSL")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("SAFETOUR_KAFKA_CERT_FILE and SAFETOUR_KAFKA_KEY_FILE go "
                              "together (a client certificate and its key, for mTLS)")
        if not self.connect_timeout_s > 0:
            raise ConfigError("SAFETOUR_KAFKA_CONNECT_TIMEOUT_S must be > 0")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    # -- what aiokafka gets ----------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (the CA file, or the system's CAs; the client
        certificate for mTLS) when TLS is asked for, else None."""
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH,
                cafile=str(self.ca_file) if self.ca_file is not None else None)
            if self.cert_file is not None and self.key_file is not None:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError) as exc:
            files = ", ".join(str(f) for f in (self.ca_file, self.cert_file, self.key_file)
                              if f is not None) or "the system CAs"
            raise ConfigError(f"Kafka TLS: cannot load {files}: {_one_line(exc)}") from None
        return ctx

    def security_kwargs(self) -> dict[str, Any]:
        """The security keyword arguments of an aiokafka client."""
        kw: dict[str, Any] = {"security_protocol": self.security_protocol}
        ctx = self.ssl_context()
        if ctx is not None:
            kw["ssl_context"] = ctx
        if self.sasl:
            assert self.password is not None  # _check
            kw.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.user,
                      sasl_plain_password=self.password.reveal())
        return kw

    def _client_kwargs(self, defaults: Mapping[str, Any],
                       overrides: Mapping[str, Any]) -> dict[str, Any]:
        install_safe_fetch()
        security = self.security_kwargs()
        clash = ({"bootstrap_servers", *security} | _SECURITY_KEYS) & set(overrides)
        if clash:
            raise TypeError(f"set {sorted(clash)} in KafkaConfig, not per client")
        return {"bootstrap_servers": self.bootstrap, **defaults, **security, **overrides}

    def admin(self, **overrides: Any) -> AIOKafkaAdminClient:
        from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

        return AIOKafkaAdminClient(**self._client_kwargs(
            {"request_timeout_ms": round(self.connect_timeout_s * 1000)}, overrides))

    def producer(self, **overrides: Any) -> AIOKafkaProducer:
        """An idempotent producer that waits for every in-sync replica (``acks=all``)."""
        from aiokafka import AIOKafkaProducer  # noqa: PLC0415

        return AIOKafkaProducer(**self._client_kwargs(
            {"acks": "all", "enable_idempotence": True}, overrides))

    def consumer(self, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
        """A consumer without a group and without auto-commit unless ``overrides`` say so."""
        from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

        return AIOKafkaConsumer(*topics, **self._client_kwargs(
            {"group_id": None, "enable_auto_commit": False}, overrides))

    # -- faust -----------------------------------------------------------------------------
    def faust_kwargs(self) -> dict[str, Any]:
        """The broker settings of a faust app: ``broker``, and for a secured cluster
        ``broker_credentials`` and ``ssl_context``. Checked against faust's own translation
        (``credentials_to_aiokafka_auth``): TLS asked for is TLS faust will use."""
        import faust  # noqa: PLC0415
        from faust.transport.drivers.aiokafka import (  # noqa: PLC0415
            credentials_to_aiokafka_auth,
        )

        kw: dict[str, Any] = {"broker": kafka_url(self.bootstrap)}
        ctx = self.ssl_context()
        creds: Any = None
        if self.sasl:
            assert self.password is not None  # _check
            # The context goes *into* the credentials: faust ignores the app's ssl_context
            # once credentials are given, and SASLCredentials without one is SASL_PLAINTEXT.
            creds = faust.SASLCredentials(username=self.user,
                                          password=self.password.reveal(),
                                          ssl_context=ctx, mechanism=self.sasl_mechanism)
        elif ctx is not None:
            creds = faust.SSLCredentials(ctx)
        if creds is not None:
            kw["broker_credentials"] = creds
        if ctx is not None:
            kw["ssl_context"] = ctx
        got = credentials_to_aiokafka_auth(creds, ctx)
        if got.get("security_protocol") != self.security_protocol or (
                self.tls and got.get("ssl_context") is None):
            raise ConfigError(f"faust would connect with {got.get('security_protocol')} where "
                              f"{self.security_protocol} is configured")
        return kw

    # -- starting clients ------------------------------------------------------------------
    def unreachable(self, exc: BaseException | str) -> KafkaUnreachable:
        why = exc if isinstance(exc, str) else _one_line(exc)
        if self.password is not None:
            why = why.replace(self.password.reveal(), "***")
        if not isinstance(exc, str) and "AuthorizationFailed" in type(exc).__name__:
            who = f"user {self.user!r}" if self.user else "this client"
            return KafkaDenied(f"Kafka at {self.bootstrap} denied {who}: {why} (ACLs: "
                               "deploy/kafka/acls.json)")
        return KafkaUnreachable(f"cannot reach Kafka at {self.bootstrap}: {why}")

    async def start(self, client: _Client) -> None:
        """``await client.start()``, bounded by ``connect_timeout_s``; KafkaUnreachable (and
        the client closed) if the cluster cannot be reached."""
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        try:
            await asyncio.wait_for(client.start(), self.connect_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await _close(client)
            if isinstance(exc, TimeoutError) and not str(exc):
                raise self.unreachable(f"no answer within {self.connect_timeout_s:.3g}s") \
                    from None
            # aiokafka says only "Unable to bootstrap": ask one broker why (a refused
            # login, an untrusted certificate, a listener of another protocol).
            why: str | None = None
            if "Unable to bootstrap" in str(exc):
                why = await self.probe()
                if why == "" or (why is not None and why.endswith("closed")):
                    why = ("the broker closed the connection: does it want another "
                           f"security protocol than {self.security_protocol} "
                           "(SAFETOUR_KAFKA_SECURITY_PROTOCOL), or credentials?")
            raise self.unreachable(why or exc) from None

    async def probe(self) -> str | None:
        """Why a connection to the first bootstrap server fails, on one line, within
        ``connect_timeout_s``: what :meth:`start` reports. ``""``: the connection (and its
        login) succeeded; None: no answer at all (nothing to add)."""
        from aiokafka.conn import create_conn  # noqa: PLC0415
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        host, _, port = self.bootstrap.split(",")[0].strip().rpartition(":")
        try:
            kw = self.security_kwargs()
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=round(
                    self.connect_timeout_s * 1000), **kw),
                self.connect_timeout_s)
        except ssl.SSLCertVerificationError as exc:
            return (f"TLS: the broker's certificate is not trusted ({exc.verify_message}); "
                    "check SAFETOUR_KAFKA_CA_FILE")
        except ssl.SSLError as exc:
            return f"TLS handshake failed ({exc.reason or _one_line(exc)})"
        except KafkaError as exc:
            text = _one_line(exc)
            if "Authentication" in text or "Sasl" in text or "SASL" in text:
                return (f"authentication failed for user {self.user!r} with "
                        f"{self.sasl_mechanism} (wrong user or password?): {text}")
            return text
        except (OSError, TimeoutError, ValueError):
            return None
        conn.close()
        return ""

    @contextlib.asynccontextmanager
    async def running(self, client: Any) -> AsyncIterator[Any]:
        """Start ``client`` (:meth:`start`), yield it, stop (or close) it at the end."""
        await self.start(client)
        try:
            yield client
        finally:
            await _close(client)


async def _close(client: Any) -> None:
    stop = getattr(client, "stop", None) or getattr(client, "close", None)
    if stop is not None:
        with contextlib.suppress(Exception):
            await stop()


async def follow_topic(
    cfg: KafkaConfig, topic: str, on_records: Callable[[Sequence[Any]], Awaitable[None]], *,
    from_start: bool, started: asyncio.Event | None = None,
) -> None:
    """Follow every partition of ``topic`` for ever, without a consumer group: from its
    beginning (``from_start``: a compacted table every process holds whole) or from its end
    (only what is new matters). Each non-empty fetch goes to ``on_records``; ``started`` is
    set once the consumer is positioned (records from then on are followed). TopicError if
    the topic does not exist; KafkaUnreachable if the cluster cannot be reached."""
    from aiokafka import TopicPartition  # noqa: PLC0415

    from .topics import partitions_of  # noqa: PLC0415  (agents.topics imports this module)

    tps = [TopicPartition(topic, p) for p in await partitions_of(cfg, topic)]
    consumer = cfg.consumer()
    await cfg.start(consumer)
    try:
        consumer.assign(tps)
        if from_start:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the positions now, before ``started``
            await consumer.position(tp)
        if started is not None:
            started.set()
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            records = [rec for recs in batches.values() for rec in recs]
            if records:
                await on_records(records)
    finally:
        await consumer.stop()


KafkaTarget = KafkaConfig | str


def as_config(target: KafkaTarget) -> KafkaConfig:
    """A :class:`KafkaConfig`; a bare ``host:port`` string is a plaintext connection (for
    tests and benchmarks; every component passes ``Settings.kafka``)."""
    return target if isinstance(target, KafkaConfig) else KafkaConfig(target)

