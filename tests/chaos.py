"""Chaos harness for the broker tests (tests/integration/test_chaos.py): a broker of the test's
own that can be stopped by a signal and restarted, a live feeder that keeps producing through an
outage, and the checks that count lost, duplicated and reordered outputs per zone, the way
Kafka's system tests and Jepsen's Kafka checks do.

Pure test code: no import-time side effects, no module-level mutable state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from agents.config import Settings
from agents.devtools.broker import EmbeddedBroker, _pid_alive

log = logging.getLogger(__name__)

#: Longer, repeated runs: SAFETOUR_CHAOS_LONG=1 (CI runs one seeded run per fault).
LONG = os.environ.get("SAFETOUR_CHAOS_LONG", "") not in ("", "0")
#: The seed of the run (SAFETOUR_CHAOS_SEED), printed in every summary line.
SEED = int(os.environ.get("SAFETOUR_CHAOS_SEED", "13"))

#: zone -> (camera, coverage m²), from deploy/zones/phitsanulok.yaml
CAMERAS = {
    "wat-yai-vihara": ("wy-vihara-cam-1", 300), "naresuan-bridge": ("nb-cam-west", 500),
    "station-forecourt": ("st-cam-1", 1200), "suan-chom-nan": ("scn-cam-1", 2000),
}


def free_port_pair() -> int:
    """A free port whose next port (the embedded broker's controller) is free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free consecutive ports")


class OwnBroker:
    """An embedded Apache Kafka of one test (its own state dir and port), from the jars the
    session already has (symlinked: no download). ``fault(sig)`` stops it with a signal;
    ``start()`` brings it back on the same data."""

    def __init__(self, tmp: Path) -> None:
        libs = Settings.from_env().state_dir / "kafka" / "libs"
        assert (libs / ".complete-4.1.1").exists(), f"no Kafka jars in {libs}: scripts/bootstrap"
        state = tmp / "broker-state"
        (state / "kafka").mkdir(parents=True)
        (state / "kafka" / "libs").symlink_to(libs.resolve(), target_is_directory=True)
        self.settings = replace(Settings.from_env({}), state_dir=state,
                                broker_port=free_port_pair())
        self.broker = EmbeddedBroker(self.settings)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def start(self) -> float:
        """Start (or restart) the broker; return the monotonic time it answered."""
        self.broker.start(timeout=120)
        return time.monotonic()

    def fault(self, sig: signal.Signals, timeout: float = 60.0) -> None:
        """Stop the broker with ``sig`` (to its process group) and wait until it is gone."""
        pid = self.broker.running_pid()
        assert pid is not None, "the broker is not running"
        os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            proc = self.broker._proc  # reap our own child, else it lingers as a zombie
            if proc is not None:
                proc.poll()
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
                raise AssertionError(f"the broker ignored {sig.name} for {timeout:.0f}s")
            time.sleep(0.1)
        if self.broker._proc is not None:
            self.broker._proc.wait()
            self.broker._proc = None

    def close(self) -> None:
        """Kill the broker and reap it (EmbeddedBroker.stop() takes a zombie for gone and
        would leave the child unreaped)."""
        pid = self.broker.running_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if self.broker._proc is not None:
            self.broker._proc.wait(30)
            self.broker._proc = None
        self.broker.stop(timeout=10)


def occupancy(zone: str, t: int, cov: int, plan: Callable[[float], float],
              period_s: float) -> dict[str, Any]:
    cam = CAMERAS[zone][0]
    return {"event_id": f"{cam}-{t}", "sensor_id": cam, "zone_id": zone, "kind": "occupancy",
            "ts": int(time.time() * 1000), "count": round(plan(t * period_s) * cov)}


@dataclass
class Feeder:
    """Produces one live reading per zone every ``period_s`` (ts = now) from a thread, until
    stopped, through broker outages: a send that fails is sent again (same event_id, which
    the worker drops as a duplicate if the first one did land). ``acked`` holds the event ids
    the broker acknowledged: the readings that went in."""

    bootstrap: str
    topic: str
    plan: Callable[[float], float]  # density (persons/m²) at t seconds from the start
    period_s: float = 0.25
    acked: set[str] = field(default_factory=set)
    failed_sends: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-feeder")
        self._thread.start()

    def stop(self, timeout: float = 120.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "the feeder did not stop"
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._feed())
        except BaseException as exc:  # reported by stop()
            self._error = exc

    async def _feed(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                    enable_idempotence=True, linger_ms=5,
                                    request_timeout_ms=60_000, retry_backoff_ms=200)
        await producer.start()
        pending: dict[asyncio.Future[Any], tuple[str, bytes, bytes]] = {}
        t = 0
        try:
            next_at = time.monotonic()
            while not self._stop.is_set():
                for zone, (_cam, cov) in CAMERAS.items():
                    ev = occupancy(zone, t, cov, self.plan, self.period_s)
                    await self._send(producer, pending, ev["event_id"], zone.encode(),
                                     orjson.dumps([ev]))
                t += 1
                next_at += self.period_s
                await self._settle(producer, pending, wait=False)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            while pending:
                await self._settle(producer, pending, wait=True)
        finally:
            await producer.stop()

    async def _send(self, producer: AIOKafkaProducer,
                    pending: dict[asyncio.Future[Any], tuple[str, bytes, bytes]],
                    event_id: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                fut = await producer.send(self.topic, value, key=key)
            except Exception:  # an outage: count it and try again
                self.failed_sends += 1
                await asyncio.sleep(0.2)
                continue
            pending[fut] = (event_id, key, value)
            return

    async def _settle(self, producer: AIOKafkaProducer,
                      pending: dict[asyncio.Future[Any], tuple[str, bytes, bytes]],
                      *, wait: bool) -> None:
        if wait and pending:
            await asyncio.wait(list(pending), timeout=1.0)
        for fut in [f for f in pending if f.done()]:
            event_id, key, value = pending.pop(fut)
            if fut.exception() is None:
                self.acked.add(event_id)
            else:
                self.failed_sends += 1
                await self._send(producer, pending, event_id, key, value)


# --- the checks -------------------------------------------------------------------------


@dataclass
class ZoneTally:
    """One zone's outputs against what was expected (or against themselves)."""

    lost: int = 0  # expected (alert_id, seq) never published
    duplicated: int = 0  # outputs doubled: a transition under two seqs, or conflicting content
    unexpected: int = 0  # (alert_id, seq) published that the reference run did not publish
    reordered: int = 0  # an alert's seq published after a higher seq of the same episode
    redelivered: int = 0  # the same record again (at least once on the wire; dedup drops it)


def _content(a: Mapping[str, Any]) -> bytes:
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS)


def _transition(a: Mapping[str, Any]) -> tuple[Any, ...]:
    return (a.get("alert_id"), a.get("status"), a.get("level"), a.get("previous_level"),
            a.get("reason"), a.get("ts"), bool(a.get("reminder")))


def tally_alerts(got: Iterable[Mapping[str, Any]],
                 expected: Iterable[Mapping[str, Any]] | None = None) -> dict[str, ZoneTally]:
    """Per zone: alerts in topic order, deduplicated by (alert_id, seq), counted against the
    ``expected`` ones (a run with no faults) if given."""
    out: dict[str, ZoneTally] = defaultdict(ZoneTally)
    seen: dict[tuple[Any, Any], bytes] = {}
    transitions: dict[tuple[Any, ...], set[Any]] = defaultdict(set)
    top_seq: dict[Any, int] = {}
    for a in got:
        z = out[str(a.get("zone_id"))]
        key = (a.get("alert_id"), a.get("seq"))
        body = _content(a)
        if key in seen:
            if seen[key] == body:
                z.redelivered += 1
            else:
                z.duplicated += 1  # same key, other content: two different outputs
            continue
        seen[key] = body
        transitions[_transition(a)].add(a.get("seq"))
        seq = int(a.get("seq") or 0)
        if seq < top_seq.get(a.get("alert_id"), 0):
            z.reordered += 1
        top_seq[a.get("alert_id")] = max(seq, top_seq.get(a.get("alert_id"), 0))
    for tr, seqs in transitions.items():
        if len(seqs) > 1:
            zone = str(tr[0]).split(":", 1)[0]
            out[zone].duplicated += len(seqs) - 1
    if expected is not None:
        want = {(a.get("alert_id"), a.get("seq")): (str(a.get("zone_id")), _content(a))
                for a in expected}
        for key, (zone, body) in want.items():
            if key not in seen:
                out[zone].lost += 1
            elif seen[key] != body:
                out[zone].duplicated += 1  # published, but not as the reference did
        for key in seen.keys() - want.keys():
            zone = str(key[0]).split(":", 1)[0]
            out[zone].unexpected += 1
    return dict(out)


def totals(t: Mapping[str, ZoneTally]) -> ZoneTally:
    out = ZoneTally()
    for z in t.values():
        for name in ("lost", "duplicated", "unexpected", "reordered", "redelivered"):
            setattr(out, name, getattr(out, name) + getattr(z, name))
    return out


def window_readings(ups: Iterable[Mapping[str, Any]]) -> tuple[dict[str, int], int]:
    """Readings counted per zone over distinct (tumbling) windows, and how many windows were
    published twice with other content (a doubled output)."""
    by_window: dict[tuple[str, str], Mapping[str, Any]] = {}
    conflicts = 0
    for u in ups:
        key = (str(u["zone_id"]), str(u["window_end"]))
        if key in by_window and _content(by_window[key]) != _content(u):
            conflicts += 1
            log.warning("window %s published twice differently: %s", key, {
                k: (by_window[key].get(k), v) for k, v in u.items()
                if by_window[key].get(k) != v})
        by_window.setdefault(key, u)
    counted: Counter[str] = Counter()
    for (zone, _end), u in by_window.items():
        counted[zone] += int(u.get("readings") or 0)
    return dict(counted), conflicts


def sent_per_zone(acked: Iterable[str]) -> dict[str, int]:
    cams = {cam: zone for zone, (cam, _cov) in CAMERAS.items()}
    out: Counter[str] = Counter()
    for event_id in acked:
        out[cams[event_id.rsplit("-", 1)[0]]] += 1
    return dict(out)


def summary(fault: str, **figures: Any) -> str:
    """The one line a chaos test prints (and records) for the closing note."""
    return f"chaos {fault} seed={SEED} " + " ".join(f"{k}={v}" for k, v in figures.items())


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else float("nan")
