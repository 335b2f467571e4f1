"""End-to-end measurements on the real broker: the ceiling, safetour's worker, the peers.

Every windowed system is observed the same way, from outside: it reads a pre-produced topic
and writes density records (``zone_id``, ``window_end``) to an output topic; the observer
reads that topic and takes the broker's append times of the first and last records. A record
for the window ending at W can only exist once the system has read past event time W + grace,
so the readings processed between the first and the last record are known from the input
(``Progress``), and

    readings/s = readings between first and last output / (append(last) - append(first))

The ceiling has no outputs: a raw aiokafka consumer is timed in-process from its first record
to its last.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.processes import stop_process
from agents.topics import TopicSpec, create_topics, partitions_of
from schemas import parse_ts

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Progress:
    """How many readings a system must have read to emit a window ending at W."""

    prefix_max_ts: list[int]
    grace_ms: int

    @classmethod
    def of(cls, ts: Sequence[int], grace_ms: int) -> Progress:
        out, hi = [], -(2**62)
        for t in ts:
            hi = max(hi, t)
            out.append(hi)
        return cls(out, grace_ms)

    def readings_for(self, window_end_ms: int) -> int:
        return bisect.bisect_left(self.prefix_max_ts, window_end_ms + self.grace_ms)


@dataclass
class Outputs:
    first_append_ms: int = 0
    last_append_ms: int = 0
    first_window_end: int = 0
    last_window_end: int = 0
    count: int = 0
    records: list[tuple[int, int]] = field(default_factory=list)  # (append ms, window end)
    ready_ms: int | None = None  # when the worker first said it was ready (/readyz 200)

    def rate(self, progress: Progress, total: int) -> float:
        if self.count < 2 or self.last_append_ms <= self.first_append_ms:
            return float("nan")
        first = progress.readings_for(self.first_window_end)
        last = min(progress.readings_for(self.last_window_end), total)
        return (last - first) / ((self.last_append_ms - self.first_append_ms) / 1000)

    def rate_since_ready(self, progress: Progress, total: int) -> float:
        """Readings the last output needed, over the time from the worker's readiness to
        that output: the whole job, for runs whose input spans too little event time for
        :meth:`rate` (100,000 zones of 12 readings: every window closes at the end, so the
        first and last outputs need the same readings and :meth:`rate` has nothing to
        divide). Includes the first windows' wait, so it is lower than :meth:`rate`."""
        if self.ready_ms is None or self.count < 1 or self.last_append_ms <= self.ready_ms:
            return float("nan")
        done = min(progress.readings_for(self.last_window_end), total)
        return done / ((self.last_append_ms - self.ready_ms) / 1000)


async def ready_at(port: int, *, every_s: float = 0.05) -> int:
    """Wall-clock ms when the worker's ``/readyz`` on ``port`` first answers 200 (polled)."""
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                await writer.drain()
                status = await reader.readline()
            finally:
                writer.close()
            if status.split()[1:2] == [b"200"]:
                return int(time.time() * 1000)
        except (OSError, asyncio.IncompleteReadError):
            pass  # not listening yet
        await asyncio.sleep(every_s)


async def observe(bootstrap: str, topic: str, *, quiet_s: float, timeout_s: float,
                  expect_min: int = 1, proc: subprocess.Popen[bytes] | None = None,
                  after_ms: int = 0, ready_port: int | None = None) -> Outputs:
    """Read ``topic`` from the start until no new record came for ``quiet_s`` (after at least
    ``expect_min``, and one appended at or after ``after_ms``), or ``timeout_s``. With
    ``ready_port``, also note when the worker serving it first says it is ready."""
    out = Outputs()
    ready = None if ready_port is None else asyncio.create_task(ready_at(ready_port))
    try:
        await _observe(out, bootstrap, topic, quiet_s=quiet_s, timeout_s=timeout_s,
                       expect_min=expect_min, proc=proc, after_ms=after_ms)
    finally:
        if ready is not None:
            if ready.done() and not ready.cancelled() and ready.exception() is None:
                out.ready_ms = ready.result()
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
    return out


async def _observe(out: Outputs, bootstrap: str, topic: str, *, quiet_s: float,
                   timeout_s: float, expect_min: int, proc: subprocess.Popen[bytes] | None,
                   after_ms: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        fresh = after_ms == 0
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=50_000)
            got = False
            for records in batches.values():
                for r in records:
                    if not r.value:
                        continue
                    doc = orjson.loads(r.value)
                    we = doc.get("window_end")
                    if we is None:
                        continue
                    w = parse_ts(we)
                    out.records.append((r.timestamp, w))
                    got = True
                    fresh = fresh or r.timestamp >= after_ms
            if got:
                last_new = time.monotonic()
            if fresh and out.records and time.monotonic() - last_new > quiet_s and \
                    len(out.records) >= expect_min:
                break
            if proc is not None and proc.poll() is not None and not got:
                break
    finally:
        await consumer.stop()
    if out.records:
        out.records.sort()
        out.count = len(out.records)
        out.first_append_ms, out.first_window_end = out.records[0]
        out.last_append_ms = out.records[-1][0]
        out.last_window_end = max(w for _, w in out.records)


async def ceiling(bootstrap: str, topic: str, messages: int) -> tuple[int, float]:
    """Raw aiokafka ``getmany`` + ``orjson.loads``: (readings, seconds)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, max_partition_fetch_bytes=4 << 20,
                                fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = readings = 0
        start = 0.0
        loads = orjson.loads
        while seen < messages:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not start and batches:
                start = time.perf_counter()
            for records in batches.values():
                for r in records:
                    v = loads(r.value)
                    readings += len(v) if isinstance(v, list) else 1
                seen += len(records)
        return readings, time.perf_counter() - start
    finally:
        await consumer.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _status_mib(pid: int, field: str) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, MiB."""
    return _status_mib(pid, "VmHWM")


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path
    out_topic: str

    def stop(self) -> None:
        stop_process(self.proc, 30)


def safetour_env(bootstrap: str, in_topic: str, zones_file: Path, state: Path,
                 **extra: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env.update({
        "SAFETOUR_KAFKA_BOOTSTRAP": bootstrap, "SAFETOUR_TOPIC_PREFIX": f"bench-{tag}.",
        "SAFETOUR_SENSOR_TOPIC": in_topic, "SAFETOUR_APP_ID": f"bench-{tag}",
        "SAFETOUR_ZONES": str(zones_file), "SAFETOUR_STATE_DIR": str(state / tag),
        "SAFETOUR_WEB_PORT": str(free_port()),
        "SAFETOUR_LOG_LEVEL": os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING"),
        # Event time of the data is months ago: never let idle partitions jump to the wall clock.
        "SAFETOUR_IDLE_S": "86400", "SAFETOUR_ZONE_METRICS_MAX": "0",
        # The input is published before the worker starts: read all of it (a backtest).
        "SAFETOUR_START": "from-start",
    })
    env.update(extra)
    return env


async def start_safetour(bootstrap: str, env: dict[str, str], log: Path) -> Worker:
    from agents.config import Settings  # noqa: PLC0415
    from agents.topics import topic_specs  # noqa: PLC0415

    s = Settings.from_env(env)
    specs = [t for t in topic_specs(s.topics) if t.name != s.topics.sensor_events]
    await create_topics(bootstrap, specs)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "agents", "worker"], env=env,  # noqa: ASYNC220
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO)
    return Worker(proc, env, log, s.topics.density)


async def ensure_topic(bootstrap: str, name: str, partitions: int = 8) -> None:
    # LogAppendTime: the observer needs the broker's clock, whatever the writer stamps (Quix
    # stamps window results with the window's event time).
    await create_topics(bootstrap, [TopicSpec(name, partitions, {
        "retention.ms": "-1", "message.timestamp.type": "LogAppendTime"})])

