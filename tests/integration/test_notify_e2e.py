"""The webhook notifier over the real broker: a receiver that fails at first, a notifier
killed mid-stream and restarted, and every alert delivered exactly once (by idempotency key)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from agents.delivery.notify import verify
from agents.topics import create_topics, topic_specs

from .conftest import free_port, make_settings, poll_until, settings_env
from .test_recovery import publish

SECRET = b"e2e-secret"


class Receiver(ThreadingHTTPServer):
    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/hook"
        self.lock = threading.Lock()
        self.calls = 0
        self.keys: dict[str, int] = {}
        self.bodies: dict[str, Any] = {}  # key -> the payload delivered
        self.exercise: set[str] = set()  # keys delivered with X-Safetour-Exercise: 1
        self.bad = 0


@contextmanager
def serving() -> Iterator[Receiver]:
    """A :class:`Receiver` on a free loopback port, served from a thread, for the block."""
    receiver = Receiver(free_port())
    thread = threading.Thread(target=receiver.serve_forever, name="receiver")
    thread.start()
    try:
        yield receiver
    finally:
        receiver.shutdown()
        receiver.server_close()
        thread.join(10)


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = verify(SECRET, self.headers["X-Safetour-Timestamp"], body,
                    self.headers["X-Safetour-Signature"])
        with self.server.lock:
            self.server.calls += 1
            failing = self.server.calls <= 3  # down for the first three calls
            if not ok:
                self.server.bad += 1
            elif not failing:
                key = self.headers["Idempotency-Key"]
                self.server.keys[key] = self.server.keys.get(key, 0) + 1
                self.server.bodies[key] = orjson.loads(body)
                if self.headers.get("X-Safetour-Exercise") == "1":
                    self.server.exercise.add(key)
        self.send_response(401 if not ok else 503 if failing else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_notifier_killed_mid_stream_delivers_every_alert_once(kafka: str, tmp_path: Path
                                                              ) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    alerts = [{"alert_id": f"z{i % 5}:{i}:x", "zone_id": f"z{i % 5}", "level": "critical",
               "previous_level": "high", "status": "escalated", "ts": f"2026-02-16T13:{i:02d}Z",
               "message": {"th": "ท", "en": "e"}} for i in range(40)]
    env = settings_env(s) | {"SAFETOUR_WEBHOOK_SECRET": SECRET.decode()}
    log = tmp_path / "notify.log"
    with serving() as receiver:
        cmd = [sys.executable, "-m", "agents", "notify", "--url", receiver.url,
               "--attempts", "10"]
        asyncio.run(publish(kafka, s.topics.alerts,
                            [(a["zone_id"].encode(), orjson.dumps(a)) for a in alerts[:20]]))
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        poll_until(lambda: len(receiver.keys) >= 10, timeout=60, what="first deliveries",
                   proc=proc, log=log)
        asyncio.run(publish(kafka, s.topics.alerts,
                            [(a["zone_id"].encode(), orjson.dumps(a)) for a in alerts[20:]]))
        proc.kill()  # mid-stream, without committing
        proc.wait()
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        poll_until(lambda: len(receiver.keys) == len(alerts), timeout=90,
                   what="every alert delivered", proc=proc, log=log)
        proc.terminate()
        proc.wait(30)
    expected = {f"{a['alert_id']}:{a['status']}:{a['ts']}" for a in alerts}
    assert set(receiver.keys) == expected  # every alert, and nothing else
    assert receiver.bad == 0
    # At least once on the wire, exactly once by idempotency key: repeats after the kill
    # carry the same key, which the receiver drops.
    assert sum(receiver.keys.values()) >= len(alerts)


def test_a_malformed_record_between_two_alerts_is_dead_lettered_not_fatal(
    kafka: str, tmp_path: Path
) -> None:
    import base64  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from .conftest import payloads  # noqa: PLC0415

    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    good = [{"alert_id": f"z1:{i}:x", "zone_id": "z1", "level": "critical",
             "previous_level": "high", "status": "escalated", "ts": f"2026-02-16T13:0{i}Z",
             "message": {"th": "ท", "en": "e"}} for i in (1, 2)]
    garbage = b"\x00\x01 this is not an alert"
    asyncio.run(publish(kafka, s.topics.alerts, [
        (b"z1", orjson.dumps(good[0])), (b"z1", garbage),
        (b"z1", orjson.dumps([good[0]])), (b"z1", orjson.dumps(good[1]))]))
    env = settings_env(s) | {"SAFETOUR_WEBHOOK_SECRET": SECRET.decode()}
    log = tmp_path / "notify.log"
    with serving() as receiver:
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "agents", "notify", "--url",
                                     receiver.url, "--attempts", "10"], env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            poll_until(lambda: len(receiver.keys) == 2, timeout=60,
                       what="both good alerts delivered", proc=proc, log=log)
            def malformed() -> list[Any]:
                found = [d for d in payloads(kafka, s.topics.notify_dlq)
                         if d["outcome"] == "malformed"]
                return found if len(found) >= 2 else []

            dead = poll_until(malformed, timeout=30, what="the malformed records dead-lettered")
        finally:
            proc.terminate()
            proc.wait(30)
    assert set(receiver.keys) == {f"{a['alert_id']}:{a['status']}:{a['ts']}" for a in good}
    assert [(d["reason"], d["source"]["offset"]) for d in dead] == [("not_json", 1),
                                                                    ("schema", 2)]
    assert base64.b64decode(dead[0]["value_b64"]) == garbage
    assert "skipped a malformed record" in log.read_text()
