"""The embedded Apache Kafka broker (KRaft, one node, loopback only).

``safetour broker start`` fetches the broker's jars from Maven Central with Maven (once), formats
a KRaft data directory under the state dir (once), and starts ``kafka.Kafka`` in its own process
session so it outlives the command. A broker already running on the port is reused. Everything
lives in ``<state_dir>/kafka/``: ``libs/``, ``data/``, ``server.properties``, ``broker.log``,
``broker.pid``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas import SafetourError

from .config import Settings, repo_root

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
    def __init__(self, settings: Settings, *, echo: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.home = settings.state_dir / "kafka"
        self.libs = self.home / "libs"
        self.data = self.home / "data"
        self.log_file = self.home / "broker.log"
        self.pid_file = self.home / "broker.pid"
        self.props = self.home / "server.properties"
        self.host = "127.0.0.1"
        self.port = settings.broker_port
        self._echo = echo or (lambda msg: log.info("%s", msg))
        # The broker process when this object started it: held so it can be reaped on stop.
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

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

    def _write_props(self) -> None:
        ctl = self.port + 1
        self.props.write_text(
            "# Written by safetour; regenerated at every start.\n"
            "process.roles=broker,controller\n"
            "node.id=1\n"
            f"controller.quorum.voters=1@{self.host}:{ctl}\n"
            f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{ctl}\n"
            f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}\n"
            "controller.listener.names=CONTROLLER\n"
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
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
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> BrokerStatus:
        pid = self.running_pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            listening=_port_open(self.host, self.port),
            bootstrap=self.bootstrap,
            log_file=self.log_file,
        )

    def start(self, timeout: float = 90.0) -> bool:
        """Start the broker unless one answers already; return True if this call started it."""
        if self.running_pid() is not None and _port_open(self.host, self.port):
            self._echo(f"broker already running on {self.bootstrap}")
            return False
        if _port_open(self.host, self.port):
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
                self._echo(f"broker ready on {self.bootstrap} in {time.monotonic() - t0:.1f}s")
                return True
            time.sleep(0.2)
        self.stop()
        raise BrokerError(
            f"the broker did not answer on {self.bootstrap} within {timeout:.0f}s; "
            f"last lines of {self.log_file}:\n{_tail(self.log_file)}"
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker this state dir started; return True if one was running."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._echo(f"stopping broker (pid {pid})...")
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
