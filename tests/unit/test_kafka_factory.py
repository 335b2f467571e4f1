"""The one Kafka client factory (agents/kafka.py): parsing, what each builder hands to
aiokafka and faust, TLS that faust cannot drop, and secrets that never show."""

from __future__ import annotations

import asyncio
import logging
import pickle
from pathlib import Path
from typing import Any

import faust
import pytest
import trustme
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from agents import kafka as kafka_mod
from agents.config import Settings
from agents.kafka import KafkaConfig, KafkaUnreachable, Secret
from agents.worker.transport import IdempotentApp
from schemas import ConfigError

PASSWORD = "s3cr3t-Pa55word-do-not-log"
BOOT = "k1:9093,k2:9093"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throw-away CA, and a client certificate with its key, as PEM files."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    client = ca.issue_cert("safetour-worker")
    paths = {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def cfg(env: dict[str, str]) -> KafkaConfig:
    return KafkaConfig.from_env(env, BOOT)


def sasl_env(protocol: str = "SASL_SSL", **extra: str) -> dict[str, str]:
    return {"SAFETOUR_KAFKA_SECURITY_PROTOCOL": protocol, "SAFETOUR_KAFKA_USER": "worker",
            "SAFETOUR_KAFKA_PASSWORD": PASSWORD, **extra}


# -- parsing -------------------------------------------------------------------------------

def test_default_is_plaintext_with_a_bounded_connect() -> None:
    c = cfg({})
    assert (c.security_protocol, c.sasl_mechanism, c.user, c.password) == \
        ("PLAINTEXT", None, None, None)
    assert c.connect_timeout_s == 15.0
    assert not c.tls
    assert not c.sasl
    assert c.security_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert c.ssl_context() is None


def test_settings_build_the_factory_from_the_environment() -> None:
    s = Settings.from_env(sasl_env("SASL_PLAINTEXT") | {"SAFETOUR_KAFKA_BOOTSTRAP": BOOT})
    assert s.kafka.bootstrap == BOOT
    assert s.kafka.security_protocol == "SASL_PLAINTEXT"
    assert s.kafka.sasl_mechanism == "SCRAM-SHA-512"  # the default with SASL
    # The embedded broker: the factory follows the port.
    assert Settings.from_env({"SAFETOUR_BROKER_PORT": "19500"}).kafka.bootstrap == \
        "127.0.0.1:19500"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_every_sasl_protocol_and_mechanism(protocol: str, mechanism: str,
                                           pki: dict[str, Path]) -> None:
    env = sasl_env(protocol, SAFETOUR_KAFKA_SASL_MECHANISM=mechanism.lower())
    if protocol == "SASL_SSL":
        env["SAFETOUR_KAFKA_CA_FILE"] = str(pki["ca"])
    kw = cfg(env).security_kwargs()
    assert kw["security_protocol"] == protocol
    assert kw["sasl_mechanism"] == mechanism
    assert kw["sasl_plain_username"] == "worker"
    assert kw["sasl_plain_password"] == PASSWORD
    assert ("ssl_context" in kw) == (protocol == "SASL_SSL")


def test_ssl_with_a_ca_file_and_mtls(pki: dict[str, Path]) -> None:
    c = cfg({"SAFETOUR_KAFKA_SECURITY_PROTOCOL": "ssl", "SAFETOUR_KAFKA_CA_FILE": str(pki["ca"]),
             "SAFETOUR_KAFKA_CERT_FILE": str(pki["cert"]),
             "SAFETOUR_KAFKA_KEY_FILE": str(pki["key"])})
    kw = c.security_kwargs()
    assert kw["security_protocol"] == "SSL"
    ctx = kw["ssl_context"]
    assert ctx.check_hostname
    assert ctx.verify_mode.name == "CERT_REQUIRED"
    assert len(ctx.get_ca_certs()) == 1  # exactly our CA, not the system's
    assert "sasl_plain_password" not in kw


def test_ssl_without_a_ca_file_uses_the_system_cas() -> None:
    ctx = cfg({"SAFETOUR_KAFKA_SECURITY_PROTOCOL": "SSL"}).ssl_context()
    assert ctx is not None
    assert ctx.check_hostname


def test_password_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(PASSWORD + "\n")
    env = sasl_env("SASL_PLAINTEXT")
    del env["SAFETOUR_KAFKA_PASSWORD"]
    c = cfg(env | {"SAFETOUR_KAFKA_PASSWORD_FILE": str(f)})
    assert c.password == Secret(PASSWORD)
    assert c.security_kwargs()["sasl_plain_password"] == PASSWORD


@pytest.mark.parametrize(("env", "says"), [
    ({"SAFETOUR_KAFKA_SECURITY_PROTOCOL": "TLS"}, "SAFETOUR_KAFKA_SECURITY_PROTOCOL='TLS'"),
    (sasl_env(SAFETOUR_KAFKA_SASL_MECHANISM="GSSAPI"), "SAFETOUR_KAFKA_SASL_MECHANISM='GSSAPI'"),
    ({"SAFETOUR_KAFKA_CONNECT_TIMEOUT_S": "soon"}, "SAFETOUR_KAFKA_CONNECT_TIMEOUT_S"),
    ({"SAFETOUR_KAFKA_CONNECT_TIMEOUT_S": "0"}, "must be > 0"),
    ({"SAFETOUR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs SAFETOUR_KAFKA_USER"),
    ({"SAFETOUR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SAFETOUR_KAFKA_USER": "w"},
     "SAFETOUR_KAFKA_PASSWORD"),
    ({"SAFETOUR_KAFKA_USER": "w", "SAFETOUR_KAFKA_PASSWORD": PASSWORD}, "uses no SASL"),
    ({"SAFETOUR_KAFKA_SASL_MECHANISM": "PLAIN"}, "uses no SASL"),
    (sasl_env(SAFETOUR_KAFKA_PASSWORD_FILE="/nonexistent/pw"), "not both"),
    ({"SAFETOUR_KAFKA_CA_FILE": "/nonexistent/ca.pem"}, "/nonexistent/ca.pem: cannot read"),
])
def test_bad_values_are_one_line_config_errors(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg(env)
    msg = str(err.value)
    assert says in msg
    assert "\n" not in msg
    assert PASSWORD not in msg


def test_bad_files_are_config_errors(tmp_path: Path, pki: dict[str, Path]) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    env = sasl_env("SASL_PLAINTEXT")
    del env["SAFETOUR_KAFKA_PASSWORD"]
    with pytest.raises(ConfigError, match="is empty"):
        cfg(env | {"SAFETOUR_KAFKA_PASSWORD_FILE": str(empty)})
    with pytest.raises(ConfigError, match="cannot read it"):
        cfg(env | {"SAFETOUR_KAFKA_PASSWORD_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="uses no TLS"):
        cfg({"SAFETOUR_KAFKA_CA_FILE": str(pki["ca"])})
    with pytest.raises(ConfigError, match="go together"):
        cfg({"SAFETOUR_KAFKA_SECURITY_PROTOCOL": "SSL",
             "SAFETOUR_KAFKA_CERT_FILE": str(pki["cert"])})
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    bad = cfg({"SAFETOUR_KAFKA_SECURITY_PROTOCOL": "SSL",
               "SAFETOUR_KAFKA_CA_FILE": str(garbage)})
    with pytest.raises(ConfigError, match="Kafka TLS: cannot load") as err:
        bad.ssl_context()
    assert "\n" not in str(err.value)


# -- builders ------------------------------------------------------------------------------

class Recorder:
    """Stands in for an aiokafka client class: records the keyword arguments."""

    made: list[tuple[str, tuple[Any, ...], dict[str, Any]]]

    def __init__(self, name: str, made: list[Any]) -> None:
        self.name, self.made = name, made

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.made.append((self.name, args, kwargs))
        return object()


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    out: list[Any] = []
    monkeypatch.setattr("aiokafka.AIOKafkaProducer", Recorder("producer", out))
    monkeypatch.setattr("aiokafka.AIOKafkaConsumer", Recorder("consumer", out))
    monkeypatch.setattr("aiokafka.admin.AIOKafkaAdminClient", Recorder("admin", out))
    return out


def test_builders_pass_the_guarantees_and_the_security(made: list[Any],
                                                       pki: dict[str, Path]) -> None:
    c = cfg(sasl_env(SAFETOUR_KAFKA_CA_FILE=str(pki["ca"])))
    c.producer(linger_ms=10)
    c.consumer("t1", max_partition_fetch_bytes=1 << 20)
    c.admin()
    (_, _, prod), (_, cargs, cons), (_, _, adm) = made
    for kw in (prod, cons, adm):
        assert kw["bootstrap_servers"] == BOOT
        assert kw["security_protocol"] == "SASL_SSL"
        assert kw["ssl_context"] is not None
        assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("worker", PASSWORD)
    assert (prod["acks"], prod["enable_idempotence"], prod["linger_ms"]) == ("all", True, 10)
    assert cargs == ("t1",)
    assert (cons["group_id"], cons["enable_auto_commit"]) == (None, False)
    assert cons["max_partition_fetch_bytes"] == 1 << 20
    assert adm["request_timeout_ms"] == 15000


def test_a_client_cannot_override_the_security(made: list[Any]) -> None:
    for key in ("security_protocol", "sasl_plain_password", "ssl_context",
                "bootstrap_servers"):
        with pytest.raises(TypeError, match="in KafkaConfig"):
            cfg({}).producer(**{key: "x"})
    assert made == []


def test_builders_install_the_safe_fetch(monkeypatch: pytest.MonkeyPatch,
                                         made: list[Any]) -> None:
    calls: list[int] = []
    monkeypatch.setattr(kafka_mod, "install_safe_fetch", lambda: calls.append(1))
    c = cfg({})
    c.producer()
    c.consumer()
    c.admin()
    assert len(calls) == 3


# -- faust ---------------------------------------------------------------------------------

def test_faust_falls_back_to_sasl_plaintext_without_a_context() -> None:
    """The trap the factory exists for: faust's own behaviour, pinned."""
    creds = faust.SASLCredentials(username="u", password="p", mechanism="SCRAM-SHA-512")
    assert credentials_to_aiokafka_auth(creds, None)["security_protocol"] == "SASL_PLAINTEXT"


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_connects_as_configured(protocol: str, pki: dict[str, Path]) -> None:
    env = sasl_env(protocol) if protocol.startswith("SASL") else \
        {"SAFETOUR_KAFKA_SECURITY_PROTOCOL": protocol}
    if protocol.endswith("SSL"):
        env["SAFETOUR_KAFKA_CA_FILE"] = str(pki["ca"])
    kw = cfg(env).faust_kwargs()
    assert kw["broker"] == "kafka://k1:9093;kafka://k2:9093"
    app = faust.App("factory-test", **kw, autodiscover=False)
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["security_protocol"] == protocol
    if protocol.endswith("SSL"):
        assert auth["ssl_context"] is not None
    if protocol.startswith("SASL"):
        assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == \
            ("worker", PASSWORD)
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512"


def test_faust_kwargs_refuse_a_downgrade(monkeypatch: pytest.MonkeyPatch,
                                         pki: dict[str, Path]) -> None:
    """Should faust ever translate the credentials to less than asked, nothing starts."""
    monkeypatch.setattr("faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth",
                        lambda creds, ctx: {"security_protocol": "SASL_PLAINTEXT"})
    with pytest.raises(ConfigError, match="SASL_PLAINTEXT where SASL_SSL"):
        cfg(sasl_env(SAFETOUR_KAFKA_CA_FILE=str(pki["ca"]))).faust_kwargs()


def test_faust_apps_have_an_idempotent_producer(monkeypatch: pytest.MonkeyPatch,
                                                pki: dict[str, Path]) -> None:
    made: list[Any] = []
    monkeypatch.setattr("aiokafka.AIOKafkaProducer", Recorder("producer", made))
    app = IdempotentApp("factory-idem",
                        **cfg(sasl_env(SAFETOUR_KAFKA_CA_FILE=str(pki["ca"]))).faust_kwargs(),
                        autodiscover=False)
    app.producer._new_producer()
    ((_, _, kw),) = made
    assert (kw["acks"], kw["enable_idempotence"]) == ("all", True)
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["ssl_context"] is not None


# -- secrets -------------------------------------------------------------------------------

def test_secrets_never_show(caplog: pytest.LogCaptureFixture, pki: dict[str, Path]) -> None:
    env = sasl_env(SAFETOUR_KAFKA_CA_FILE=str(pki["ca"]))
    c = cfg(env)
    s = Settings.from_env(env | {"SAFETOUR_KAFKA_BOOTSTRAP": BOOT})
    kw = c.faust_kwargs()
    shown = [repr(c), str(c), repr(s), str(c.password), repr(c.password),
             repr(kw["broker_credentials"]), repr(kw)]
    with caplog.at_level(logging.DEBUG, logger="safetour.test"):
        logging.getLogger("safetour.test").info("config %s %r", c, c)
    shown.append(caplog.text)
    for text in shown:
        assert PASSWORD not in text
    assert "worker" in repr(c)  # the user is not a secret
    # An error text that quotes the password (a broker's message) is masked.
    exc = c.unreachable(OSError(f"auth failed for worker/{PASSWORD}"))
    assert PASSWORD not in str(exc)
    assert "***" in str(exc)
    with pytest.raises(TypeError):
        pickle.dumps(c.password)


# -- unreachable ---------------------------------------------------------------------------

class _Hangs:
    stopped = False

    async def start(self) -> None:
        await asyncio.sleep(3600)

    async def stop(self) -> None:
        self.stopped = True


class _Refused(_Hangs):
    async def start(self) -> None:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")


@pytest.mark.asyncio
async def test_start_is_bounded_and_says_where() -> None:
    c = KafkaConfig("127.0.0.1:1", connect_timeout_s=0.05)
    hangs = _Hangs()
    with pytest.raises(KafkaUnreachable) as err:
        await c.start(hangs)
    assert str(err.value) == "cannot reach Kafka at 127.0.0.1:1: no answer within 0.05s"
    assert hangs.stopped
    refused = _Refused()
    with pytest.raises(KafkaUnreachable, match=r"127\.0\.0\.1:1: connection refused"):
        await c.start(refused)
    assert refused.stopped
