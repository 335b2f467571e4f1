"""The embedded Apache Kafka broker (KRaft, one node, loopback only).

``safetour broker start`` fetches the broker's jars from Maven Central with Maven (once), formats
a KRaft data directory under the state dir (once), and starts ``kafka.Kafka`` in its own process
session so it outlives the command. A broker already running on the port is reused. Everything
lives in ``<state_dir>/kafka/``: ``libs/``, ``data/``, ``server.properties``, ``broker.log``,
``broker.pid``.

``--secure`` (``SAFETOUR_BROKER_SECURE=1``) runs a secured broker instead, in
``<state_dir>/kafka-secure/`` (its own data: a plaintext broker's data is never reused):

- clients connect on a ``SASL_SSL`` listener (the port) with SCRAM-SHA-512; one user a
  principal of ``deploy/kafka/acls.json``, created when the storage is formatted (KIP-900),
  each with a random password in ``secrets/<user>.password`` (mode 0600);
- the controller listener (port + 1) and the inter-broker listener (port + 2) are SSL with a
  client certificate required (SCRAM cannot be used on a KRaft controller listener): only a
  holder of the broker's key, ``tls/broker.pem`` (mode 0600), gets in, as the one super user
  ``User:CN=safetour-broker``;
- ``StandardAuthorizer``, ``allow.everyone.if.no.acl.found=false``; at every start the broker's
  own principal applies the ACLs of ``deploy/kafka/acls.json`` (agents/acls.py);
- the CA and the broker certificate (``tls/``) are made once (agents/devtools/certs.py).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from schemas import SafetourError

from ..config import Settings, repo_root
from ..kafka import KafkaConfig
from .certs import BROKER_PRINCIPAL, TlsFiles, ensure_passwords, ensure_tls

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"


class BrokerError(SafetourError, RuntimeError):
    """The embedded broker could not be fetched, started or stopped."""


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    running: bool
    pid: int | None
    listening: bool
    bootstrap: str
    log_file: Path
    secure: bool = False

    @property
    def kind(self) -> str:
        return "secured" if self.secure else "plaintext"


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding, as Kafka makes them.

    Like Kafka's own ``Uuid.randomUuid``, never one that starts with '-', which command-line
    parsers take for an option.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no broker log)"


class EmbeddedBroker:
    """The plaintext or (``secure``) the secured embedded broker of a state dir.

    ``echo`` takes the progress lines; ``say`` the lines a user copies as they are (the
    ``export`` lines of a secured broker's connection), ``echo`` when not given.
    """

    def __init__(self, settings: Settings, *, echo: Callable[[str], None] | None = None,
                 secure: bool | None = None, say: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.secure = settings.broker_secure if secure is None else secure
        self.home = settings.state_dir / ("kafka-secure" if self.secure else "kafka")
        # The jars are shared by the plaintext and the secured broker.
        self.libs = settings.state_dir / "kafka" / "libs"
        self.data = self.home / "data"
        self.log_file = self.home / "broker.log"
        self.pid_file = self.home / "broker.pid"
        self.props = self.home / "server.properties"
        self.host = "127.0.0.1"
        self.port = settings.broker_port
        self._echo = echo or (lambda msg: log.info("%s", msg))
        self._say = say or self._echo
        # The broker process when this object started it: held so it can be reaped on stop.
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def scratch(cls, settings: Settings, name: str, port: int,
                echo: Callable[[str], None] | None = None) -> EmbeddedBroker:
        """The plaintext broker of a state of its own, ``settings.state_dir / name``, on
        ``port``, sharing the Kafka jars. Nothing is touched until :meth:`reset` or
        :meth:`start`. scripts/test runs the suite on one, emptied first, so the suite's
        thousands of topics never pile up in the demo broker's data (7 GB after a few dozen
        runs, which made its start take 20 to 50 s), and a demo broker is left alone."""
        own = replace(settings, state_dir=settings.state_dir / name, broker_port=port,
                      broker_secure=False)
        broker = cls(own, echo=echo, secure=False)
        broker.libs = settings.state_dir / "kafka" / "libs"
        return broker

    def reset(self) -> None:
        """Stop this state's broker (by its pid file) and delete its data and log."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def kind(self) -> str:
        return "secured" if self.secure else "plaintext"

    @property
    def started_here(self) -> bool:
        """True while this object holds a broker process it started (even one still
        starting up): the one :meth:`stop` must not leave behind."""
        return self._proc is not None

    # -- jars -------------------------------------------------------------------------------
    def ensure_jars(self) -> None:
        marker = self.libs / f".complete-{KAFKA_VERSION}"
        if marker.exists():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is not on PATH; run scripts/bootstrap to install it")
        pom = repo_root() / "deploy/kafka/pom.xml"
        if not pom.exists():
            raise BrokerError(f"{pom} is missing; run safetour from its source checkout")
        self._echo(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (once)...")
        shutil.rmtree(self.libs, ignore_errors=True)
        self.libs.mkdir(parents=True)
        cmd = [
            mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            output = proc.stdout[-3000:] + proc.stderr[-3000:]
            raise BrokerError(f"mvn failed ({proc.returncode}):\n{output}")
        marker.write_text(KAFKA_VERSION)

    # -- process ----------------------------------------------------------------------------
    def _java(self) -> str:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin/java") if home else shutil.which("java")
        if not java or not Path(java).exists():
            raise BrokerError("java is not installed; run scripts/bootstrap (OpenJDK 17+)")
        return java

    # -- security (--secure) -----------------------------------------------------------------
    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def internal_bootstrap(self) -> str:
        """The mTLS inter-broker listener (port + 2): the broker's own super-user door."""
        return f"{self.host}:{self.port + 2}"

    def users(self) -> list[str]:
        from ..acls import principals  # noqa: PLC0415

        return principals()

    def password_file(self, user: str) -> Path:
        return self.secrets_dir / f"{user}.password"

    def connection_env(self, user: str) -> dict[str, str]:
        """The environment of a client connecting as ``user`` (agents/kafka.py)."""
        return {
            "SAFETOUR_KAFKA_BOOTSTRAP": self.bootstrap,
            "SAFETOUR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SAFETOUR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "SAFETOUR_KAFKA_USER": user,
            "SAFETOUR_KAFKA_PASSWORD_FILE": str(self.password_file(user)),
            "SAFETOUR_KAFKA_CA_FILE": str(self.tls_dir / "ca.pem"),
        }

    def superuser(self) -> KafkaConfig:
        """A client config as the broker's own principal (the one super user), over mTLS."""
        tls = ensure_tls(self.tls_dir)
        return KafkaConfig(self.internal_bootstrap, security_protocol="SSL", ca_file=tls.ca,
                           cert_file=tls.cert, key_file=tls.key)

    def _secure_props(self, tls: TlsFiles) -> str:
        ctl, internal = self.port + 1, self.port + 2
        return (
            f"listeners=SASL_SSL://{self.host}:{self.port},CONTROLLER://{self.host}:{ctl},"
            f"INTERNAL://{self.host}:{internal}\n"
            f"advertised.listeners=SASL_SSL://{self.host}:{self.port},"
            f"INTERNAL://{self.host}:{internal}\n"
            "controller.listener.names=CONTROLLER\n"
            "inter.broker.listener.name=INTERNAL\n"
            "listener.security.protocol.map=CONTROLLER:SSL,INTERNAL:SSL,SASL_SSL:SASL_SSL\n"
            # Clients: SCRAM-SHA-512 over TLS. The server side of SCRAM needs no secret here:
            # the credentials live in the cluster metadata (made at format time).
            "sasl.enabled.mechanisms=SCRAM-SHA-512\n"
            "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512\n"
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
            # One key and certificate for every listener (PEM: KIP-651), one CA trusted.
            "ssl.keystore.type=PEM\n"
            f"ssl.keystore.location={tls.broker}\n"
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={tls.ca}\n"
            # The controller and inter-broker listeners take only the broker's own cert.
            "listener.name.controller.ssl.client.auth=required\n"
            "listener.name.internal.ssl.client.auth=required\n"
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n"
            "allow.everyone.if.no.acl.found=false\n"
            f"super.users={BROKER_PRINCIPAL}\n"
        )

    def _write_props(self) -> None:
        ctl = self.port + 1
        if self.secure:
            listeners = self._secure_props(ensure_tls(self.tls_dir))
        else:
            listeners = (
                f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{ctl}\n"
                f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}\n"
                "controller.listener.names=CONTROLLER\n"
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
            )
        self.props.write_text(
            "# Written by safetour; regenerated at every start.\n"
            "process.roles=broker,controller\n"
            "node.id=1\n"
            f"controller.quorum.voters=1@{self.host}:{ctl}\n"
            + listeners +
            f"log.dirs={self.data}\n"
            "num.partitions=1\n"
            # Topics are created by `safetour topics create`, with their documented settings;
            # faust creates its own internal topics through the admin API.
            "auto.create.topics.enable=false\n"
            "offsets.topic.replication.factor=1\n"
            "offsets.topic.num.partitions=8\n"
            "transaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\n"
            "share.coordinator.state.topic.replication.factor=1\n"
            "share.coordinator.state.topic.min.isr=1\n"
            # One node on loopback: no reason to hold the first rebalance back.
            "group.initial.rebalance.delay.ms=0\n"
            "log.retention.check.interval.ms=60000\n"
        )

    def _format(self, java: str) -> None:
        if (self.data / "meta.properties").exists():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        cmd = [java, "-cp", f"{self.libs}/*", "kafka.tools.StorageTool", "format",
               f"--cluster-id={new_cluster_id()}", "-c", str(self.props)]
        secrets: list[str] = []
        if self.secure:
            # KIP-900: the SCRAM users exist from the first start. The passwords are on this
            # command line for the second it runs (visible to local users in /proc): the
            # tool takes them no other way.
            for user, path in ensure_passwords(self.secrets_dir, self.users()).items():
                pw = path.read_text().strip()
                secrets.append(pw)
                cmd += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={pw}]"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            out = proc.stdout + proc.stderr
            for pw in secrets:
                out = out.replace(pw, "***")
            raise BrokerError(f"formatting KRaft storage failed:\n{out}")

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def started_port(self) -> int:
        """The client port in the broker's last ``server.properties`` (the port it runs on
        when it runs, whatever SAFETOUR_BROKER_PORT says now); else :attr:`port`."""
        try:
            text = self.props.read_text()
        except OSError:
            return self.port
        m = re.search(r"^listeners=[A-Z_]+://[^:,\s]+:(\d+)", text, re.MULTILINE)
        return int(m.group(1)) if m else self.port

    def status(self) -> BrokerStatus:
        pid = self.running_pid()
        port = self.started_port() if pid is not None else self.port
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            listening=_port_open(self.host, port),
            bootstrap=f"{self.host}:{port}",
            log_file=self.log_file,
            secure=self.secure,
        )

    def start(self, timeout: float = 90.0) -> bool:
        """Start the broker unless one answers already; return True if this call started it."""
        if self.running_pid() is not None and _port_open(self.host, self.port):
            self._echo(f"broker already running on {self.bootstrap}")
            if self.secure:
                self._echo_connect()
            return False
        ports = (self.port, self.port + 1, self.port + 2) if self.secure else (self.port,)
        if any(_port_open(self.host, p) for p in ports):
            other = EmbeddedBroker(self.settings, secure=not self.secure)
            other_pid = other.running_pid()
            if other_pid is not None and other.started_port() in ports:
                raise BrokerError(
                    f"the {other.kind} embedded broker (pid {other_pid}) runs on port "
                    f"{other.started_port()}: stop it first (safetour broker stop)")
            raise BrokerError(
                f"port {self.port} is taken by another process; set SAFETOUR_BROKER_PORT, or "
                "SAFETOUR_KAFKA_BOOTSTRAP to use that broker"
            )
        self.ensure_jars()
        java = self._java()
        self.home.mkdir(parents=True, exist_ok=True)
        self._write_props()
        self._format(java)
        t0 = time.monotonic()
        self._echo(f"starting Apache Kafka {KAFKA_VERSION} (KRaft) on {self.bootstrap}...")
        log4j = repo_root() / "deploy/kafka/log4j2.yaml"
        cmd = [
            java, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp", f"{self.libs}/*", "kafka.Kafka", str(self.props),
        ]
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.home,
            )
        self._proc = proc
        self.pid_file.write_text(str(proc.pid))
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {proc.returncode} during start-up; "
                    f"last lines of {self.log_file}:\n{_tail(self.log_file)}"
                )
            if _port_open(self.host, self.port):
                if self.secure:
                    self._apply_acls(deadline)
                self._echo(f"broker ready on {self.bootstrap} in {time.monotonic() - t0:.1f}s")
                if self.secure:
                    self._echo_connect()
                return True
            time.sleep(0.2)
        self.stop()
        raise BrokerError(
            f"the broker did not answer on {self.bootstrap} within {timeout:.0f}s; "
            f"last lines of {self.log_file}:\n{_tail(self.log_file)}"
        )

    def _apply_acls(self, deadline: float) -> None:
        """Apply deploy/kafka/acls.json (this state's prefix and app id) as the super user,
        retrying while the broker finishes starting."""
        import asyncio  # noqa: PLC0415

        from ..acls import apply_acls, load_acls  # noqa: PLC0415

        acls = load_acls(self.settings)
        cfg = self.superuser()
        while True:
            try:
                result = asyncio.run(apply_acls(cfg, acls))
            except SafetourError as exc:
                if time.monotonic() > deadline:
                    raise BrokerError(f"applying the ACLs failed: {exc}") from None
                time.sleep(0.5)
                continue
            self._echo(f"ACLs: {len(result.created)} created, {len(result.present)} present "
                       f"(deploy/kafka/acls.json, prefix {self.settings.topics.prefix!r})")
            return

    def _echo_connect(self) -> None:
        self._echo("secured: SASL_SSL + SCRAM-SHA-512, TLS with a local CA, ACLs enforced. "
                   "Connect as a principal (" + ", ".join(self.users()) + ") with:")
        # Plain shell lines (no prefix, quoted): pasted into a shell as they are.
        for k, v in self.connection_env("operator").items():
            self._say(f"export {k}={shlex.quote(v)}")
        self._echo(f"(another principal: SAFETOUR_KAFKA_USER=<name>, "
                   f"SAFETOUR_KAFKA_PASSWORD_FILE={self.secrets_dir}/<name>.password)")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker this state dir started; return True if one was running."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._echo(f"stopping the {self.kind} broker (pid {pid})...")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        proc = self._proc if self._proc is not None and self._proc.pid == pid else None
        while time.monotonic() < deadline and _pid_alive(pid):
            if proc is not None:
                proc.poll()  # reaps our own child
            time.sleep(0.2)
        if _pid_alive(pid):
            log.warning("broker pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait()
            self._proc = None
        self._forget(pid)
        return True

    def _forget(self, pid: int) -> None:
        """Remove the pid file if it still names ``pid`` (another process may own it now)."""
        try:
            if int(self.pid_file.read_text().strip()) == pid:
                self.pid_file.unlink()
        except (OSError, ValueError):
            pass

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_file, lines)

