"""Offline pipeline benchmark: the worker's processing alone, no broker.

    python -m benchmarks.offline [--readings 200000] [--zones 108] [--shapes single,batch100]
                                 [--fetch 5000] [--reps 3] [--profile 25]
    python -m benchmarks.offline --compare /tmp/old [--reps 3] ...   # interleaved with a tree

The end-to-end benchmark's input (``benchmarks/data.py``: the simulator's night cloned over
``--zones`` zones, its registry written by ``data.write_registry`` and read back) is built once;
each message gets the partition and offset Kafka would give it (murmur2 of the key over 8
partitions, or the gateway site's partition) and a broker timestamp (LogAppendTime: the
moment it was produced, before the worker starts). The timed part is
``Pipeline.process_sensor_batch`` over the messages in delivery order, in fetches of about
``--fetch`` readings, with the wall clock as ``now`` (as the worker calls it), on a pipeline
from ``Settings.pipeline`` with the benchmark's worker settings. A warm-up pipeline runs first
(numba compiles or loads its cache outside the clock). Reported: CPU and wall µs per reading,
density records, alerts, DLQ records and rejected items by reason.

``--compare TREE``: the same run in another checkout of safetour (``git worktree add /tmp/old
<commit>``), each repetition a child process alternating between this tree and that one, so
both see the same machine load; medians of ``--reps``. Each tree builds the input with its own
``benchmarks/data.py`` (and simulator), and calls its own pipeline (the call is positional, so
the older ``arrival_ms`` spelling works too).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["Fetch", "Run", "main", "messages", "run"]

PARTITIONS = 8
SHAPES = ("single", "batch100")
WORKER_ENV = {"SAFETOUR_IDLE_S": "86400", "SAFETOUR_ZONE_METRICS_MAX": "0"}  # as e2e's
WARMUP_READINGS = 3000


class Message(NamedTuple):
    """A consumed message as the pipeline reads it (``streams.pipeline.Consumed``)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


Fetch = list[Message]


@dataclass
class Run:
    """One pass over the input: counts and costs."""

    tree: str
    shape: str
    readings: int
    cpu_s: float
    wall_s: float
    density: int = 0
    alerts: int = 0
    dlq: int = 0
    events_in: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.readings * 1e6

    @property
    def wall_us(self) -> float:
        return self.wall_s / self.readings * 1e6


def _partition(key: bytes | None) -> int:
    from aiokafka.partitioner import murmur2  # noqa: PLC0415

    from benchmarks import data  # noqa: PLC0415

    site = data.site_partition(key) if key is not None else None
    if site is not None:
        return site
    if key is None:
        return 0
    return int(murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def messages(msgs: list[tuple[bytes, bytes]], topic: str, fetch_readings: int,
             per_message: int, produced_ms: int) -> list[Fetch]:
    """``msgs`` as Kafka would hand them to the worker: partitions, offsets, timestamps; in
    fetches of about ``fetch_readings`` readings (``per_message`` readings a message)."""
    offsets: Counter[int] = Counter()
    out: list[Message] = []
    for key, value in msgs:
        p = _partition(key)
        out.append(Message(topic, p, offsets[p], produced_ms, key, value))
        offsets[p] += 1
    step = max(1, fetch_readings // max(1, per_message))
    return [out[i:i + step] for i in range(0, len(out), step)]


def _pipeline(registry: Path) -> Any:
    from agents.config import Settings  # noqa: PLC0415
    from schemas import load_zones  # noqa: PLC0415

    env = dict(os.environ) | WORKER_ENV | {"SAFETOUR_ZONES": str(registry)}
    return Settings.from_env(env).pipeline(load_zones(registry))


def _pass(pipe: Any, fetches: list[Fetch], run: Run, *, count: bool = True) -> None:
    rejected: Counter[str] = Counter()
    for batch in fetches:
        out = pipe.process_sensor_batch(batch, int(time.time() * 1000))
        if count:
            run.density += len(out.density)
            run.alerts += len(out.alerts)
            run.dlq += len(out.dlq)
            run.events_in += out.events_in
            run.duplicates += out.duplicates
            rejected.update(out.rejected)
    run.rejected = dict(sorted((rejected + Counter(run.rejected)).items()))


def run(zones: int, readings: int, shapes: list[str], fetch: int, profile: int = 0,
        tree: str = ".") -> list[Run]:
    """One timed pass per shape over the benchmark's input, on fresh pipelines."""
    from benchmarks import data  # noqa: PLC0415

    ds = data.build(zones, readings)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        registry = data.write_registry(ds.zones, Path(tmp) / "zones.json")
        produced = int(time.time() * 1000)
        for shape in shapes:
            msgs, per = (ds.single, 1) if shape == "single" else (ds.batch100, 100)
            fetches = messages(msgs, f"bench.{shape}", fetch, per, produced)
            warm = messages(msgs[:max(1, WARMUP_READINGS // per)], "warm", fetch, per, produced)
            _pass(_pipeline(registry), warm, Run(tree, shape, 1, 0, 0), count=False)
            pipe = _pipeline(registry)
            r = Run(tree, shape, sum(len(orjson_items(v)) for _, v in msgs), 0.0, 0.0)
            prof = cProfile.Profile() if profile else None
            c0, w0 = time.process_time(), time.perf_counter()
            if prof is not None:
                prof.enable()
            _pass(pipe, fetches, r)
            if prof is not None:
                prof.disable()
            r.cpu_s, r.wall_s = time.process_time() - c0, time.perf_counter() - w0
            runs.append(r)
            if prof is not None:
                print(f"--- profile: {shape} ---", file=sys.stderr)
                pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(profile)
    return runs


def orjson_items(value: bytes) -> list[Any]:
    """The readings of one message (a gateway batch is a JSON array)."""
    import orjson  # noqa: PLC0415

    doc = orjson.loads(value)
    return doc if isinstance(doc, list) else [doc]


def _child(tree: Path, args: argparse.Namespace) -> list[Run]:
    """One repetition in ``tree``'s checkout: this script run there, its result as JSON."""
    code = ("import runpy, sys; sys.argv[0] = 'benchmarks/offline.py'; "
            f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')")
    cmd = [sys.executable, "-c", code, "--json", "--readings", str(args.readings), "--zones",
           str(args.zones), "--shapes", ",".join(args.shapes), "--fetch", str(args.fetch),
           "--tree-label", str(tree)]
    env = dict(os.environ) | {"PYTHONPATH": str(tree)}
    res = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"offline: the run in {tree} failed:\n{res.stderr[-3000:]}")
    return [Run(**d) for d in json.loads(res.stdout)]


def _table(runs: list[Run]) -> str:
    rows = ["| tree | shape | CPU µs/reading | wall µs/reading | runs (CPU µs) | density | "
            "alerts | DLQ records | rejected by reason |", "|---|---|---:|---:|---|---:|---:|"
            "---:|---|"]
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.tree, r.shape), []).append(r)
    for (tree, shape), rs in groups.items():
        last = rs[-1]
        why = ", ".join(f"{k} {v:,}" for k, v in last.rejected.items()) or "-"
        rows.append(
            f"| {tree} | {shape} | {statistics.median(r.cpu_us for r in rs):.1f} | "
            f"{statistics.median(r.wall_us for r in rs):.1f} | "
            f"{', '.join(f'{r.cpu_us:.1f}' for r in rs)} | {last.density:,} | {last.alerts:,} | "
            f"{last.dlq:,} | {why} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.offline",
                                 description=__doc__.split("\n\n")[2] if __doc__ else None)
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--zones", type=int, default=108)
    ap.add_argument("--shapes", type=lambda s: s.split(","), default=list(SHAPES),
                    help="comma-separated: single, batch100")
    ap.add_argument("--fetch", type=int, default=5000, help="readings a fetch (about)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--compare", type=Path, action="append", default=[], metavar="TREE",
                    help="another safetour checkout, run interleaved with this one")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="print the top N functions by own time (cProfile; in-process only)")
    ap.add_argument("--json", action="store_true", help="print the runs as JSON")
    ap.add_argument("--tree-label", default=".", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    bad = [s for s in args.shapes if s not in SHAPES]
    if bad:
        ap.error(f"unknown shapes {bad}; known: {', '.join(SHAPES)}")
    runs: list[Run] = []
    if args.compare:
        here = Path(__file__).resolve().parent.parent
        for _ in range(args.reps):
            for tree in (here, *args.compare):
                runs.extend(_child(tree.resolve(), args))
                print(f"offline: {runs[-1].tree} done", file=sys.stderr, flush=True)
    else:
        for _ in range(args.reps):
            runs.extend(run(args.zones, args.readings, args.shapes, args.fetch, args.profile,
                            args.tree_label))
    if args.json:
        print(json.dumps([r.__dict__ for r in runs]))
    else:
        print(_table(runs))


if __name__ == "__main__":
    main()
