"""kill -9 during snapshot writes: the worker, snapshotting every 0.2 s, is killed several
times while it writes; each restart recovers from a snapshot (never from offset 0) and the
outputs equal those of a run that was never interrupted."""

from __future__ import annotations

import asyncio
import logging
import random
import select
import subprocess
import time
from pathlib import Path

import pytest

from agents.topics import create_topics, topic_specs
from agents.worker.state import KEEP, read_snapshots

from .conftest import KCAT, make_settings, poll_until, start_worker, stop_worker
from .test_recovery import alerts, finished, messages, publish, windows

log_ = logging.getLogger(__name__)
ENV = {"SAFETOUR_BATCH_MAX": "4", "SAFETOUR_SNAPSHOT_S": "0.2"}
KILLS = 4
PARTITIONS = range(8)


def kill_while_writing(proc: subprocess.Popen[bytes], kafka: str, topic: str,
                       rng: random.Random) -> None:
    """At a random moment, kill -9 the worker as soon as it writes a snapshot chunk (the
    manifests and tombstones of that snapshot follow within milliseconds)."""
    time.sleep(rng.uniform(0.2, 1.5))
    watch = subprocess.Popen([KCAT, "-b", kafka, "-C", "-t", topic, "-o", "end", "-u", "-q",
                              "-f", "%k\\n"], stdout=subprocess.PIPE)
    assert watch.stdout is not None
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready, _, _ = select.select([watch.stdout], [], [], 0.5)
            if ready and watch.stdout.readline().decode().strip().count("/") == 3:
                break  # group/partition/sid/n: a chunk
    finally:
        proc.kill()
        proc.wait()
        watch.kill()
        watch.wait()
        watch.stdout.close()


def torn(kafka: str, topic: str, group: str) -> bool:
    """The state topic holds a write cut short: a chunk or manifest of no complete snapshot,
    or older snapshots not yet tombstoned."""
    found = asyncio.run(read_snapshots(kafka, topic, group, PARTITIONS))
    return any(f.garbage or len(f.candidates) > KEEP for f in found.values())


@pytest.mark.slow
def test_kill_9_during_snapshot_writes_recovers_from_a_snapshot(
    kafka: str, tmp_path: Path
) -> None:
    rng = random.Random(13)
    msgs = messages()
    runs = {}
    for name in ("steady", "crashed"):
        s = make_settings(kafka, tmp_path / name)
        s.state_dir.mkdir()
        asyncio.run(create_topics(kafka, topic_specs(s.topics)))
        asyncio.run(publish(kafka, s.topics.sensor_events, msgs))
        runs[name] = s
    # The uninterrupted run goes on beside the crashed one (topics and groups of its own).
    steady = runs["steady"]
    reference = start_worker(steady, steady.state_dir / "worker.log", **ENV)
    s = runs["crashed"]
    log = s.state_dir / "worker.log"
    proc = start_worker(s, log, **ENV)
    cut_short = 0
    try:
        # Every partition has a first snapshot (so no restart may replay from offset 0).
        def snapshotted() -> bool:
            found = asyncio.run(read_snapshots(kafka, s.topics.state, s.app_id, PARTITIONS))
            return all(f.snapshot is not None for f in found.values())

        poll_until(snapshotted, timeout=30, every=0.1, what="first snapshots", proc=proc,
                   log=log)
        for _ in range(KILLS):
            kill_while_writing(proc, kafka, s.topics.state, rng)
            cut_short += torn(kafka, s.topics.state, s.app_id)
            assert not finished(s), "the run finished before the kill"
            mark = len(log.read_text(errors="replace"))
            proc = start_worker(s, log, **ENV)

            def recovered(mark: int = mark) -> bool:
                text = log.read_text(errors="replace")[mark:]
                return text.count(": restored ") >= len(PARTITIONS)

            poll_until(recovered, timeout=30, what="recovery from snapshots", proc=proc,
                       log=log)
            assert "no snapshot" not in log.read_text(errors="replace")[mark:]
        got = poll_until(lambda: finished(s), timeout=60, what="recovered run done",
                         proc=proc, log=log)
        expected = poll_until(lambda: finished(steady), timeout=60, what="steady run done",
                              proc=reference)
    finally:
        stop_worker(proc)
        stop_worker(reference)
    log_.warning("%d kills, %d of them left a snapshot write cut short", KILLS, cut_short)
    assert windows(got) == windows(expected)
    assert alerts(s) == alerts(steady)
    assert {a[1] for a in alerts(steady)} >= {"raised", "escalated", "resolved"}
