"""`safetour worker` stopped by SIGTERM or SIGINT awaits its pending deliveries, writes a final
snapshot that records everything it read, and exits 0 within its documented time (README
"Guarantees"; agents/worker/worker.py STOP_WITHIN_S). Against the shared broker: a few seconds."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import orjson
import pytest

from agents.topics import create_topics, topic_specs
from agents.worker.state import read_snapshots
from agents.worker.worker import STOP_WITHIN_S

from .conftest import kcat_count, make_settings, poll_until, signal_and_wait, start_worker
from .test_recovery import publish

ZONE, CAM = "wat-yai-vihara", "wy-vihara-cam-1"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_stops_cleanly_with_a_final_snapshot(
    sig: signal.Signals, kafka: str, tmp_path: Path
) -> None:
    s = make_settings(kafka, tmp_path)
    asyncio.run(create_topics(kafka, topic_specs(s.topics)))
    log = tmp_path / "worker.log"
    # Snapshots only at the stop: the one found afterwards is the final one.
    proc = start_worker(s, log, SAFETOUR_SNAPSHOT_S="3600")
    try:
        t0 = (int(time.time()) - 120) * 1000
        msgs = [(ZONE.encode(), orjson.dumps([{
            "event_id": f"{CAM}-{t}", "sensor_id": CAM, "zone_id": ZONE, "kind": "occupancy",
            "ts": t0 + t * 1000, "count": 40}])) for t in range(60)]
        asyncio.run(publish(kafka, s.topics.sensor_events, msgs))
        poll_until(lambda: kcat_count(kafka, s.topics.density) > 0, timeout=60,
                   what="density records", proc=proc, log=log)
        rc, took = signal_and_wait(proc, sig, STOP_WITHIN_S + 20, "`safetour worker`", log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert took < STOP_WITHIN_S + 10, f"stopped in {took:.1f} s"
    assert "final snapshot of partitions" in text, text[-3000:]
    found = asyncio.run(read_snapshots(s.kafka, s.topics.state, s.app_id, range(8)))
    recorded = {p: f.snapshot.offset for p, f in found.items() if f.snapshot is not None}
    # Every reading read is recorded: the one partition the zone's key lands on holds 60.
    assert sorted(recorded.values())[-1] == len(msgs), recorded
    assert sum(recorded.values()) == len(msgs), recorded
