"""``python -m benchmarks`` (``make bench``): safetour against the ceiling and its peers.

    python -m benchmarks [--smoke] [--reps 3] [--readings 400000] [--skip-peers]
                         [--systems ceiling,safetour,io-ceiling] [--skip-extras]

In one run on the embedded Apache Kafka: pre-produce the simulator's readings (single-reading
messages and gateway batches of 100), then for each repetition measure the ceiling (raw
aiokafka + orjson), safetour's worker, the I/O ceiling (the ceiling producing the very records
that safetour run produced, ``benchmarks/ceiling_io.py``), faust-native and quixstreams on the
same topics; then
latency at half of safetour's rate, memory and cost per reading at 100, 10,000 and 100,000
zones, and recovery after kill -9 with 10,000 zones. Writes ``benchmarks/RESULTS.md`` (with
``--smoke``: ``.safetour/bench/RESULTS-smoke.md``) and PNG plots beside it. ``--smoke`` is a
tiny run for CI: it asserts nothing about speed, it only keeps the harness working.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from agents.config import Settings
from agents.devtools import EmbeddedBroker
from agents.processes import ignore_stop_signals, interrupt_on_sigterm, stop_process

from . import ceiling_io, data, e2e

SYSTEMS = ("ceiling", "io-ceiling", "safetour", "faust-native", "quixstreams")
PEERS = ("faust-native", "quixstreams")
SHAPES = ("single", "batch100")


@dataclass
class Results:
    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    rss: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    scale: list[dict[str, Any]] = field(default_factory=list)
    recovery: dict[str, Any] = field(default_factory=dict)
    recovery_detail: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, system: str, shape: str, rate: float, rss: float | None = None) -> None:
        self.rates.setdefault((system, shape), []).append(rate)
        if rss is not None:
            self.rss.setdefault((system, shape), []).append(rss)

    def median(self, system: str, shape: str) -> float:
        xs = [x for x in self.rates.get((system, shape), []) if not math.isnan(x)]
        return statistics.median(xs) if xs else float("nan")


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings = Settings.from_env()
        self.run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        self.state = self.settings.state_dir / "bench" / self.run_id
        self.state.mkdir(parents=True, exist_ok=True)
        self.bootstrap = ""
        self.grace_ms = 10_000
        self.res = Results()
        self.captured = ceiling_io.Planned([], [], {})

    # -- data --------------------------------------------------------------------------------
    def dataset(self, zones: int, readings: int, tag: str) -> tuple[data.Dataset, dict[str, str],
                                                                     Path]:
        t = time.perf_counter()
        ds = data.build(zones, readings)
        registry = data.write_registry(ds.zones, self.state / f"zones-{tag}.json")
        topics = {shape: f"bench-{self.run_id}.{tag}.{shape}" for shape in SHAPES}
        for shape, msgs in (("single", ds.single), ("batch100", ds.batch100)):
            asyncio.run(e2e.ensure_topic(self.bootstrap, topics[shape]))
            asyncio.run(data.produce(self.bootstrap, topics[shape], msgs))
        say(f"{tag}: {len(ds.readings):,} readings over {len(ds.zones):,} zones produced "
            f"({len(ds.single):,} + {len(ds.batch100):,} messages) in "
            f"{time.perf_counter() - t:.1f}s")
        return ds, topics, registry

    # -- systems -----------------------------------------------------------------------------
    def ceiling(self, topic: str, messages: int) -> float:
        readings, seconds = asyncio.run(e2e.ceiling(self.bootstrap, topic, messages))
        return readings / seconds

    def safetour(self, topic: str, ds: data.Dataset, registry: Path, *, timeout_s: float,
                 label: str, shape: str = "single", capture: bool = False,
                 since_ready: bool = False, **env: str) -> tuple[float, float, e2e.Outputs]:
        """safetour's rate (``since_ready``: :meth:`e2e.Outputs.rate_since_ready`); with
        ``capture``, what it produced is kept in ``self.captured`` (``ceiling_io.plan``) for
        the I/O ceiling."""
        wenv = e2e.safetour_env(self.bootstrap, topic, registry, self.state, **env)
        w = asyncio.run(e2e.start_safetour(self.bootstrap, wenv, self.state / f"{label}.log"))
        try:
            outs = asyncio.run(e2e.observe(
                self.bootstrap, w.out_topic, quiet_s=4, timeout_s=timeout_s, proc=w.proc,
                ready_port=int(wenv["SAFETOUR_WEB_PORT"]) if since_ready else None))
            rss = e2e.peak_rss_mb(w.proc.pid)
        finally:
            w.stop()
        progress = e2e.Progress.of(ds.ts_of(shape), self.grace_ms)
        if capture:
            t = Settings.from_env(w.env).topics
            records, parts = asyncio.run(ceiling_io.capture(
                self.bootstrap, [t.density, t.alerts, t.alerts_cap, t.dlq]))
            self.captured = ceiling_io.plan(records, progress, len(ds.readings), parts)
        rate = (outs.rate_since_ready if since_ready else outs.rate)(progress, len(ds.readings))
        return rate, rss, outs

    def io_ceiling(self, topic: str, messages: int) -> float:
        readings, seconds, _ = asyncio.run(ceiling_io.io_ceiling(
            self.bootstrap, topic, messages, self.captured, mode=self.args.io_mode))
        return readings / seconds

    def peer(self, system: str, topic: str, ds: data.Dataset, registry: Path, shape: str,
             *, timeout_s: float) -> tuple[float, float]:
        out_topic = f"{topic}.out-{system}-{uuid.uuid4().hex[:6]}"
        asyncio.run(e2e.ensure_topic(self.bootstrap, out_topic))
        cmd = [sys.executable, "-m", "benchmarks.peers",
               "faust" if system == "faust-native" else "quix", topic, out_topic,
               str(registry), "--bootstrap", self.bootstrap,
               "--state", str(self.state / f"{system}-{uuid.uuid4().hex[:6]}")]
        if shape == "batch100":
            cmd.append("--batched")
        log = self.state / f"{system}-{shape}.log"
        with log.open("ab") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=e2e.REPO)
        try:
            outs = asyncio.run(e2e.observe(self.bootstrap, out_topic, quiet_s=6,
                                           timeout_s=timeout_s, proc=proc))
            rss = e2e.peak_rss_mb(proc.pid)
        finally:
            stop_process(proc)
        if outs.count < 2:
            say(f"{system} {shape}: no outputs (see {log})")
        return outs.rate(e2e.Progress.of(ds.ts_of(shape), self.grace_ms),
                         len(ds.readings)), rss

    # -- the run -----------------------------------------------------------------------------
    def throughput(self) -> None:
        a = self.args
        ds, topics, registry = self.dataset(a.zones, a.readings, "main")
        on = set(a.systems)
        for rep in range(1, a.reps + 1):
            for shape in SHAPES:
                n_msgs = len(ds.single) if shape == "single" else len(ds.batch100)
                if "ceiling" in on:
                    c = self.ceiling(topics[shape], n_msgs)
                    self.res.add("ceiling", shape, c)
                    say(f"rep {rep} {shape}: ceiling {c:,.0f} readings/s")
                if "safetour" in on:
                    s, rss, outs = self.safetour(
                        topics[shape], ds, registry, label=f"st-{shape}", timeout_s=a.timeout,
                        shape=shape, capture="io-ceiling" in on)
                    self.res.add("safetour", shape, s, rss)
                    say(f"rep {rep} {shape}: safetour {s:,.0f} readings/s "
                        f"({outs.count:,} outputs, peak RSS {rss:.0f} MiB)")
                if "io-ceiling" in on:
                    io = self.io_ceiling(topics[shape], n_msgs)
                    self.res.add("io-ceiling", shape, io)
                    say(f"rep {rep} {shape}: I/O ceiling {io:,.0f} readings/s "
                        f"({len(self.captured.records):,} records, "
                        f"{self.captured.bytes / 2**20:.1f} MiB produced; safetour / I/O "
                        f"ceiling {s / io:.2f}x)")
                for system in PEERS:
                    if system not in on or (a.smoke and shape != "single"):
                        continue  # the smoke runs each peer's harness once: ~40 s less
                    r, rss = self.peer(system, topics[shape], ds, registry, shape,
                                       timeout_s=a.peer_timeout)
                    self.res.add(system, shape, r, rss)
                    say(f"rep {rep} {shape}: {system} {r:,.0f} readings/s")

    def write(self) -> Path:
        from .report import write_results  # noqa: PLC0415

        out = Path(self.args.out) if self.args.out else (
            self.state.parent / "RESULTS-smoke.md" if self.args.smoke
            else e2e.REPO / "benchmarks" / "RESULTS.md")
        write_results(self, out)
        return out


def _systems(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SYSTEMS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; of {', '.join(SYSTEMS)}")
    return [s for s in SYSTEMS if s in names]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("faust-streaming", "aiokafka", "quixstreams", "numba", "orjson"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # a peer that is not installed is reported as such
            out[pkg] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny run for CI (no speed claims)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (medians reported)")
    p.add_argument("--readings", type=int, default=400_000)
    p.add_argument("--zones", type=int, default=108, help="zones of the throughput runs")
    p.add_argument("--timeout", type=float, default=180, help="per safetour run, seconds")
    p.add_argument("--peer-timeout", type=float, default=40,
                   help="observation time per peer run (slow peers are cut off), seconds")
    p.add_argument("--skip-peers", action="store_true",
                   help="the same as --systems without faust-native and quixstreams")
    p.add_argument("--systems", type=_systems, default=list(SYSTEMS),
                   help=f"comma-separated, of {','.join(SYSTEMS)} (default all); io-ceiling "
                   "needs safetour (it produces what safetour produced in the same repetition)")
    p.add_argument("--io-mode", choices=ceiling_io.MODES, default="batch",
                   help="how the I/O ceiling produces: create_batch/send_batch per partition "
                   "(as the worker) or send with linger")
    p.add_argument("--skip-extras", action="store_true",
                   help="only throughput: no latency, memory or recovery runs")
    p.add_argument("--out", help="results file (default benchmarks/RESULTS.md)")
    p.add_argument("--scale-readings", type=int, default=200_000,
                   help="readings of each zone-count run (at least 4 a zone)")
    p.add_argument("--max-live-rate", type=float, default=60_000,
                   help="cap of the latency run's producer (one Python producer), readings/s")
    a = p.parse_args(argv)
    if a.skip_peers:
        a.systems = [s for s in a.systems if s not in PEERS]
    if "io-ceiling" in a.systems and "safetour" not in a.systems:
        p.error("--systems: io-ceiling needs safetour")
    if "safetour" not in a.systems and not a.skip_extras:
        p.error("the latency run is paced at half of safetour's rate: add safetour to "
                "--systems, or --skip-extras")
    if a.smoke:
        a.reps, a.readings, a.timeout, a.peer_timeout = 1, 20_000, 60, 12
        a.scale_readings = 10_000
    import logging  # noqa: PLC0415

    # aiokafka logs every metadata retry while fresh topics elect leaders: noise here.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # SIGTERM stops like Ctrl-C: every run's ``finally`` stops its worker or peer, and the
    # one below the broker this harness started (by its pid), then the harness exits 130.
    interrupt_on_sigterm()
    bench = Bench(a)
    broker = EmbeddedBroker(bench.settings, echo=say)
    try:
        return _run(a, bench, broker)
    except KeyboardInterrupt:
        say("interrupted: stopping what this run started")
        return 130
    finally:
        ignore_stop_signals()  # a second signal must not leave the broker running
        if broker.started_here:  # started by this run (even one still starting up)
            broker.stop()
        if a.smoke:
            shutil.rmtree(bench.state, ignore_errors=True)


def _run(a: argparse.Namespace, bench: Bench, broker: EmbeddedBroker) -> int:
    if bench.settings.embedded:
        broker.start()
        bench.bootstrap = broker.bootstrap
    else:
        bench.bootstrap = bench.settings.bootstrap
    bench.throughput()
    if not a.skip_extras:
        from . import extras  # noqa: PLC0415

        extras.latency(bench)
        extras.scale(bench)
        extras.recovery(bench)
    out = bench.write()
    say(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
