"""``safetour broker start|stop|status`` manage the LOCAL embedded broker(s) of the state dir.

No Java here: a stand-in "broker" is a process of its own session (``sleep``) named by the
pid file, with a socket listening on its port. The secured broker's start is the real code
path up to the point where it would launch Java (it finds the stand-in running).
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.cli import ensure_broker, names_embedded
from agents.config import Settings
from agents.devtools import EmbeddedBroker

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FakeBroker:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid


@pytest.fixture
def fakes() -> Iterator[list[FakeBroker]]:
    made: list[FakeBroker] = []
    yield made
    for f in made:
        f.sock.close()
        if f.proc.poll() is None:
            f.proc.kill()
        f.proc.wait()


def _fake_broker(state: Path, kind: str, made: list[FakeBroker]) -> FakeBroker:
    """A process standing in for the ``kind`` ("kafka" or "kafka-secure") broker."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port: int = sock.getsockname()[1]
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    home = state / kind
    home.mkdir(parents=True, exist_ok=True)
    (home / "broker.pid").write_text(str(proc.pid))
    scheme = "SASL_SSL" if kind == "kafka-secure" else "PLAINTEXT"
    (home / "server.properties").write_text(
        f"process.roles=broker,controller\nlisteners={scheme}://127.0.0.1:{port},"
        f"CONTROLLER://127.0.0.1:{port + 1}\n")
    fake = FakeBroker(proc, sock, port)
    made.append(fake)
    return fake


def _cli(state: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAFETOUR_")}
    base |= {"SAFETOUR_STATE_DIR": str(state), "SAFETOUR_BROKER_PORT": "1"} | env
    return subprocess.run([sys.executable, "-m", "agents", "broker", *args], env=base,
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def _client_env(state: Path, port: int) -> dict[str, str]:
    """The variables ``broker start --secure`` prints, as a README shell has them exported,
    after ``tls/`` was deleted to rotate the certificate (the CA file is gone)."""
    b = EmbeddedBroker(Settings(state_dir=state, broker_port=port), secure=True)
    env = b.connection_env("operator")
    assert not Path(env["SAFETOUR_KAFKA_CA_FILE"]).exists()
    assert not Path(env["SAFETOUR_KAFKA_PASSWORD_FILE"]).exists()
    return env


def _gone(fake: FakeBroker) -> bool:
    try:
        fake.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_status_and_stop_without_secure_find_the_secured_broker(
        tmp_path: Path, fakes: list[FakeBroker]) -> None:
    fake = _fake_broker(tmp_path, "kafka-secure", fakes)
    st = _cli(tmp_path, "status")
    assert st.returncode == 0, st.stdout + st.stderr
    assert st.stdout.strip() == (f"running secured pid={fake.pid} bootstrap=127.0.0.1:"
                                 f"{fake.port} log={tmp_path}/kafka-secure/broker.log")
    stop = _cli(tmp_path, "stop")
    assert stop.returncode == 0, stop.stderr
    assert f"stopping the secured broker (pid {fake.pid})" in stop.stdout
    assert _gone(fake)
    assert not (tmp_path / "kafka-secure" / "broker.pid").exists()
    st = _cli(tmp_path, "status")
    assert st.returncode == 3
    assert st.stdout.startswith("stopped ")
    again = _cli(tmp_path, "stop")
    assert again.returncode == 0
    assert "no embedded broker is running" in again.stdout


def test_stop_and_status_act_on_both_brokers_and_secure_on_the_secured_only(
        tmp_path: Path, fakes: list[FakeBroker]) -> None:
    plain = _fake_broker(tmp_path, "kafka", fakes)
    secured = _fake_broker(tmp_path, "kafka-secure", fakes)
    st = _cli(tmp_path, "status")
    assert st.returncode == 0
    lines = st.stdout.splitlines()
    assert lines[0].startswith(f"running plaintext pid={plain.pid} ")
    assert lines[1].startswith(f"running secured pid={secured.pid} ")
    only = _cli(tmp_path, "stop", "--secure")
    assert f"stopping the secured broker (pid {secured.pid})" in only.stdout
    assert "plaintext" not in only.stdout
    assert _gone(secured)
    assert plain.proc.poll() is None
    rest = _cli(tmp_path, "stop")
    assert f"stopping the plaintext broker (pid {plain.pid})" in rest.stdout
    assert _gone(plain)


def test_broker_start_secure_runs_in_the_shell_the_readme_sets_up(
        tmp_path: Path, fakes: list[FakeBroker]) -> None:
    fake = _fake_broker(tmp_path, "kafka-secure", fakes)
    env = _client_env(tmp_path, fake.port)
    proc = _cli(tmp_path, "start", "--secure", SAFETOUR_BROKER_PORT=str(fake.port), **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"broker already running on 127.0.0.1:{fake.port}" in proc.stdout
    # The connection is printed as plain shell lines, pasted as they are.
    exports = [ln for ln in proc.stdout.splitlines() if ln.startswith("export ")]
    assert len(exports) == len(env)
    assert "safetour: export" not in proc.stdout
    script = "\n".join(exports) + "\nenv\n"
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                           env={"PATH": os.environ["PATH"]}, timeout=10)
    got = dict(ln.split("=", 1) for ln in shell.stdout.splitlines() if "=" in ln)
    for k, v in env.items():
        assert got[k] == v
    # Status and stop in the same shell.
    assert _cli(tmp_path, "status", **env).returncode == 0
    assert f"(pid {fake.pid})" in _cli(tmp_path, "stop", **env).stdout
    assert _gone(fake)


def test_broker_start_is_not_blocked_by_client_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the printed variables exported (CA file gone), start reaches the broker's own
    start: the client settings are not its business."""
    from agents import cli  # noqa: PLC0415

    started: list[tuple[bool, int]] = []

    def fake_start(self: EmbeddedBroker, timeout: float = 90.0) -> bool:
        started.append((self.secure, self.port))
        return True

    monkeypatch.setattr(EmbeddedBroker, "start", fake_start)
    for k in [k for k in os.environ if k.startswith("SAFETOUR_")]:
        monkeypatch.delenv(k)
    env = _client_env(tmp_path, 19555)
    for k, v in (env | {"SAFETOUR_STATE_DIR": str(tmp_path),
                        "SAFETOUR_BROKER_PORT": "19555"}).items():
        monkeypatch.setenv(k, v)
    assert cli.main(["broker", "start", "--secure"]) == 0
    assert started == [(True, 19555)]
    # A bootstrap naming another cluster: nothing local is started.
    monkeypatch.setenv("SAFETOUR_KAFKA_BOOTSTRAP", "kafka.example.org:9093")
    assert cli.main(["broker", "start", "--secure"]) == 0
    assert started == [(True, 19555)]


def test_run_and_topics_with_a_remote_bootstrap_start_no_local_broker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: EmbeddedBroker, timeout: float = 90.0) -> bool:
        raise AssertionError("a local broker was started")

    monkeypatch.setattr(EmbeddedBroker, "start", refuse)
    assert ensure_broker(Settings(bootstrap="kafka.example.org:9092")) is False
    assert ensure_broker(Settings(bootstrap="127.0.0.1:19092")) is False


@pytest.mark.parametrize(("bootstrap", "port", "own"), [
    ("127.0.0.1:19092", 19092, True),
    ("localhost:19092,127.0.0.1:19092", 19092, True),
    ("[::1]:19092", 19092, True),
    ("127.0.0.1:19093", 19092, False),
    ("kafka.example.org:19092", 19092, False),
    ("127.0.0.1:19092,kafka.example.org:9092", 19092, False),
    ("", 19092, False),
])
def test_names_embedded(bootstrap: str, port: int, own: bool) -> None:
    assert names_embedded(bootstrap, port) is own


def test_export_lines_quote_paths_with_spaces(tmp_path: Path) -> None:
    lines: list[str] = []
    said: list[str] = []
    state = tmp_path / "my state"
    b = EmbeddedBroker(Settings(state_dir=state), secure=True, echo=lines.append,
                       say=said.append)
    b._echo_connect()
    assert all(s.startswith("export ") for s in said)
    assert not any(ln.startswith("export ") for ln in lines)
    pw = next(s for s in said if "PASSWORD_FILE" in s)
    assert shlex.split(pw) == ["export", f"SAFETOUR_KAFKA_PASSWORD_FILE={state}/kafka-secure/"
                                         "secrets/operator.password"]
