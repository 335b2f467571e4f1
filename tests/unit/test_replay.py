"""``safetour replay``: the pipeline over files, deterministic to the byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
T0 = 1_771_158_600_000  # 2026-02-15T12:30:00Z


def write_inputs(tmp: Path) -> tuple[Path, Path]:
    events = tmp / "events.jsonl"
    lines = []
    t = 0
    for seconds, density in [(30, 1.0), (60, 2.6), (60, 4.0), (90, 6.0), (90, 4.0), (150, 1.0)]:
        for _ in range(seconds):
            lines.append(orjson.dumps([{
                "event_id": f"c1-{t}", "sensor_id": "wy-vihara-cam-1",
                "zone_id": "wat-yai-vihara", "kind": "occupancy", "ts": T0 + t * 1000,
                "count": round(density * 300)}]))
            t += 1
    lines.insert(100, b"this line is not JSON")
    events.write_bytes(b"\n".join(lines) + b"\n")
    reports = tmp / "reports.jsonl"
    reports.write_bytes(orjson.dumps({
        "report_id": "r1", "ts": T0 + 200_000, "zone_id": "naresuan-bridge",
        "category": "fire", "source": "police"}) + b"\n")
    return events, reports


def run(tmp: Path, events: Path, reports: Path, name: str) -> bytes:
    out = tmp / f"{name}.jsonl"
    dlq = tmp / f"{name}-dlq.jsonl"
    subprocess.run(
        [sys.executable, "-m", "agents", "replay", "--zones",
         str(REPO / "deploy/zones/phitsanulok.yaml"), "--events", str(events), "--reports",
         str(reports), "--out", str(out), "--dlq", str(dlq), "--quiet"],
        check=True, capture_output=True, env={"PATH": "/usr/bin:/bin"},
    )
    return out.read_bytes() + b"--dlq--\n" + dlq.read_bytes()


@pytest.mark.kernels
def test_replay_twice_is_byte_identical_and_tells_the_whole_story(tmp_path: Path) -> None:
    events, reports = write_inputs(tmp_path)
    first = run(tmp_path, events, reports, "a")
    assert first == run(tmp_path, events, reports, "b")
    alerts_part, dlq_part = first.split(b"--dlq--\n")
    alerts = [orjson.loads(x) for x in alerts_part.splitlines()]
    vihara = [(a["status"], a["level"]) for a in alerts if a["zone_id"] == "wat-yai-vihara"]
    assert vihara == [("raised", "elevated"), ("escalated", "high"), ("escalated", "critical"),
                      ("deescalated", "high"), ("resolved", "normal")]
    fire = [a for a in alerts if a["zone_id"] == "naresuan-bridge"]
    # The fire holds the sensorless-in-this-input bridge at critical (re-alarmed while it
    # lasts, in event time).
    assert [(a["level"], a["reason"]) for a in fire][:1] == [("critical", "report")]
    assert all(a.get("reminder") for a in fire[1:])
    assert [orjson.loads(x)["reason"] for x in dlq_part.splitlines()] == ["not_json"]
