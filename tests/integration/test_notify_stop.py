"""`safetour notify` stopped by SIGTERM or SIGINT, as a real process: it exits within its
grace plus a second or two, commits only what it delivered, and the next start delivers
what it still held (issue 13, item 9)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.topics import create_topics, topic_specs

from .conftest import free_port, make_settings, poll_until, settings_env, signal_and_wait
from .test_recovery import publish

SECRET = b"stop-secret"
GRACE_S = 1.0
STOP_WITHIN_S = GRACE_S + 4.0  # the grace, the last commit, leaving the group


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, hang: set[str]) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/hook"
        self.hang = hang
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.keys: dict[str, int] = {}
        self.hung = 0


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers["Idempotency-Key"]
        if key in self.server.hang or "*" in self.server.hang:  # never answers this one
            with self.server.lock:
                self.server.hung += 1
            self.server.release.wait(30)
            return
        with self.server.lock:
            self.server.keys[key] = self.server.keys.get(key, 0) + 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(hang: set[str]) -> Iterator[Receiver]:
    receiver = Receiver(free_port(), hang)
    thread = threading.Thread(target=receiver.serve_forever, name="receiver")
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        receiver.shutdown()
        receiver.server_close()
        thread.join(10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_notify_stops_in_time_and_the_next_start_delivers_what_it_held(
    sig: signal.Signals, kafka: str, tmp_path: Path
) -> None:
    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    alerts = [{"alert_id": f"z1:{i}:x", "zone_id": "z1", "level": "critical",
               "previous_level": "high", "status": "escalated", "seq": 1,
               "ts": f"2026-02-16T13:0{i}:00Z", "message": {"th": "ท", "en": "e"}}
              for i in range(5)]
    keys = [f"{a['alert_id']}:1" for a in alerts]
    # One key, one partition: offsets 0 and 1 are answered, 2..4 hang.
    asyncio.run(publish(kafka, s.topics.alerts, [(b"z1", orjson.dumps(a)) for a in alerts]))
    env = settings_env(s) | {"SAFETOUR_WEBHOOK_SECRET": SECRET.decode()}
    log = tmp_path / "notify.log"
    with serving(set(keys[2:])) as receiver:
        cmd = [sys.executable, "-m", "agents", "notify", "--url", receiver.url,
               "--grace", str(GRACE_S)]
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            poll_until(lambda: len(receiver.keys) == 2 and receiver.hung == 3, timeout=60,
                       what="two delivered, three hanging", proc=proc, log=log)
            time.sleep(1.5)  # let a periodic commit pass too: it must not cover 2..4
            rc, took = signal_and_wait(proc, sig, STOP_WITHIN_S, "`safetour notify`", log)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = log.read_text(errors="replace")
        assert rc == 0, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert took < STOP_WITHIN_S
        assert "read again at the next start" in text
        receiver.hang.clear()
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            poll_until(lambda: len(receiver.keys) == 5, timeout=60,
                       what="the held alerts delivered after the restart", proc=proc, log=log)
            time.sleep(1.0)  # a re-send of 0 or 1 would arrive now
        finally:
            proc.terminate()
            proc.wait(30)
    # Offsets 0 and 1 were committed (delivered), 2..4 were not: each key exactly once.
    assert receiver.keys == dict.fromkeys(keys, 1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_escalator_stops_in_time_with_a_delivery_in_flight(
    sig: signal.Signals, kafka: str, tmp_path: Path
) -> None:
    """`safetour notify --escalate-after` is long-running too: on SIGTERM or SIGINT the
    escalation under way gets the grace, is handed back (not logged as sent) and the
    process exits 0."""
    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    critical = {"alert_id": "z1:esc:x", "zone_id": "z1", "level": "critical",
                "previous_level": "high", "status": "escalated", "seq": 1, "ts": now,
                "message": {"th": "ท", "en": "e"}}
    asyncio.run(publish(kafka, s.topics.alerts, [(b"z1", orjson.dumps(critical))]))
    env = settings_env(s) | {"SAFETOUR_WEBHOOK_SECRET": SECRET.decode()}
    log = tmp_path / "escalate.log"
    with serving({"*"}) as receiver:
        cmd = [sys.executable, "-m", "agents", "notify", "--url", receiver.url,
               "--grace", str(GRACE_S), "--escalate-after", "0"]
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            poll_until(lambda: receiver.hung == 1, timeout=60,
                       what="the escalation in flight", proc=proc, log=log)
            rc, took = signal_and_wait(proc, sig, STOP_WITHIN_S, "`safetour notify`", log)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert took < STOP_WITHIN_S
    assert "cut off by the stop: the next start sends it" in text
    assert "escalated z1:esc:x" not in text
