"""Escalation over the real broker: critical alerts nobody acknowledged go to a second channel
(a real local webhook receiver) once; acknowledged, resolved and non-critical ones never; and
a notifier killed and restarted does not escalate anything twice."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from agents.topics import create_topics, topic_specs
from schemas import Ack, encode_ack

from .conftest import make_settings, payloads, poll_until, settings_env
from .test_notify_e2e import SECRET, serving
from .test_recovery import publish


def alert(aid: str, level: str, status: str = "raised") -> dict[str, Any]:
    return {"alert_id": aid, "zone_id": aid.split(":", maxsplit=1)[0], "level": level,
            "status": status, "ts": "2026-02-16T13:00:00.000Z",
            "message": {"th": "วิกฤต", "en": "critical"}}


def esc_key(aid: str) -> str:
    return f"{aid}:raised:2026-02-16T13:00:00.000Z:escalation"


def test_unacknowledged_critical_alerts_escalate_once(kafka: str, tmp_path: Path) -> None:
    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    env = settings_env(s) | {"SAFETOUR_WEBHOOK_SECRET": SECRET.decode()}
    log = tmp_path / "escalate.log"

    def send(topic: str, records: list[tuple[str, bytes]]) -> None:
        asyncio.run(publish(kafka, topic, [(k.encode(), v) for k, v in records]))

    with serving() as receiver:  # answers 503 to its first three calls
        cmd = [sys.executable, "-m", "agents", "notify", "--url", receiver.url,
               "--attempts", "10", "--escalate-after", "3"]

        def start() -> subprocess.Popen[bytes]:
            with log.open("ab") as out:
                return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

        a, b, c, d, e, f = (f"{z}:1" for z in ("za", "zb", "zc", "zd", "ze", "zf"))
        send(s.topics.alerts, [(x, orjson.dumps(alert(x, lvl))) for x, lvl in
                               ((a, "critical"), (b, "critical"), (c, "high"),
                                (d, "critical"))])
        send(s.topics.alerts, [(d, orjson.dumps(alert(d, "normal", "resolved")))])
        send(s.topics.acks, [(b, encode_ack(Ack(b, "somchai", 1771246800000)))])
        proc = start()
        poll_until(lambda: esc_key(a) in receiver.keys, timeout=60, what="A escalated",
                   proc=proc, log=log)
        # E is published after A's deadline passed (and B's, C's and D's with it): once E is
        # escalated, anything B, C or D would have caused has happened.
        send(s.topics.alerts, [(e, orjson.dumps(alert(e, "critical")))])
        poll_until(lambda: esc_key(e) in receiver.keys, timeout=60, what="E escalated",
                   proc=proc, log=log)
        assert set(receiver.keys) == {esc_key(a), esc_key(e)}
        # The kill lands after the escalator logged both: it logs after delivering
        # (agents/escalate.py), so a kill between the two repeats that one delivery. Under
        # parallel tests that window was hit (E delivered twice).
        poll_until(lambda: {r["alert_id"] for r in payloads(kafka, s.topics.escalations)}
                   >= {a, e}, timeout=30, what="A and E in the escalation log", proc=proc,
                   log=log)

        proc.kill()  # no goodbye
        proc.wait()
        proc = start()
        send(s.topics.alerts, [(f, orjson.dumps(alert(f, "critical")))])
        poll_until(lambda: esc_key(f) in receiver.keys, timeout=60, what="F escalated",
                   proc=proc, log=log)
        proc.terminate()
        proc.wait(30)
    # Each escalated once, on the wire too: the restart read its log and repeated nothing.
    assert receiver.keys == {esc_key(a): 1, esc_key(e): 1, esc_key(f): 1}
    assert receiver.bad == 0
    logged = payloads(kafka, s.topics.escalations)
    assert sorted(r["alert_id"] for r in logged) == [a, e, f]
    assert {r["outcome"] for r in logged} == {"delivered"}


def test_an_escalated_episode_resolved_or_acknowledged_is_stood_down_once(
        kafka: str, tmp_path: Path) -> None:
    """A (real) is resolved and B (a drill's) acknowledged after their escalations were
    delivered: the escalation channel hears one stand-down each (B's marked as a drill); a
    kill and restart repeats neither; C, acknowledged before it fell due, never escalated,
    gets none."""
    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    env = settings_env(s) | {"SAFETOUR_WEBHOOK_SECRET": SECRET.decode()}
    log = tmp_path / "escalate.log"

    def send(topic: str, records: list[tuple[str, bytes]]) -> None:
        asyncio.run(publish(kafka, topic, [(k.encode(), v) for k, v in records]))

    with serving() as receiver:  # answers 503 to its first three calls
        cmd = [sys.executable, "-m", "agents", "notify", "--url", receiver.url,
               "--attempts", "10", "--escalate-after", "2"]

        def start() -> subprocess.Popen[bytes]:
            with log.open("ab") as out:
                return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

        a, b, c, f = "za:1", "drill-zb:1", "zc:1", "zf:1"
        send(s.topics.alerts, [(a, orjson.dumps(alert(a, "critical"))),
                               (b, orjson.dumps(alert(b, "critical") | {"exercise": True})),
                               (c, orjson.dumps(alert(c, "critical")))])
        send(s.topics.acks, [(c, encode_ack(Ack(c, "malee", 1771246800000)))])
        proc = start()
        poll_until(lambda: {esc_key(a), esc_key(b)} <= set(receiver.keys), timeout=60,
                   what="A and B escalated", proc=proc, log=log)
        send(s.topics.alerts, [(a, orjson.dumps(alert(a, "normal", "resolved")))])
        send(s.topics.acks, [(b, encode_ack(Ack(b, "somchai", 1771246800000)))])
        downs = {f"{a}:stand-down", f"{b}:stand-down"}
        poll_until(lambda: downs <= set(receiver.keys), timeout=60, what="A and B stood down",
                   proc=proc, log=log)
        poll_until(lambda: sum(1 for r in payloads(kafka, s.topics.escalations)
                               if r.get("stand_down")) >= 2, timeout=30,
                   what="the stand-downs in the escalation log", proc=proc, log=log)
        proc.kill()  # no goodbye
        proc.wait()
        proc = start()
        send(s.topics.alerts, [(f, orjson.dumps(alert(f, "critical")))])
        poll_until(lambda: esc_key(f) in receiver.keys, timeout=60, what="F escalated",
                   proc=proc, log=log)
        proc.terminate()
        proc.wait(30)
    assert receiver.keys == {esc_key(a): 1, esc_key(b): 1, esc_key(f): 1,
                             f"{a}:stand-down": 1, f"{b}:stand-down": 1}
    resolved_a = receiver.bodies[f"{a}:stand-down"]
    assert resolved_a["stand_down"]["reason"] == "resolved"
    assert resolved_a["message"]["en"].startswith("STAND DOWN")
    assert resolved_a["message"]["th"].startswith("ยกเลิกการยกระดับ")
    acked_b = receiver.bodies[f"{b}:stand-down"]
    assert acked_b["stand_down"]["by"] == "somchai"
    assert "acknowledged by somchai" in acked_b["message"]["en"]
    assert acked_b["exercise"] is True
    assert receiver.exercise == {esc_key(b), f"{b}:stand-down"}
    logged = [r for r in payloads(kafka, s.topics.escalations) if r.get("stand_down")]
    assert sorted((r["alert_id"], r["outcome"]) for r in logged) == [
        (b, "delivered"), (a, "delivered")]
