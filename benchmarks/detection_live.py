"""The detection benchmark live, through a broker (``python -m benchmarks.detection live``).

    python -m benchmarks.detection live --bootstrap HOST:PORT [--scenarios crush,songkran]
        [--seeds 1,2,3] [--speed 20] [--speed crush=10] [--out FILE]

Each scenario x seed starts a ``safetour worker`` (production windows) on topics of its own,
publishes the scenario ``speed`` times faster than real time and reads the alerts back, an
alert's time being its broker timestamp mapped to scenario time (by the sensor messages' own
broker timestamps against their delivery times). Scored like the offline runs
(:mod:`benchmarks.detection`): **live** (the worker) against **offline** (today's alarm on the
same input, offline) and **before** (the legacy alarm offline).

Whether the machine kept up, two figures: how far the publisher fell behind its schedule
(wall seconds, at most), and, per alert (matched by ``alert_id`` and ``seq``), its live time
minus its offline time in scenario seconds (median and largest; a worker falling behind
makes it grow with the speed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from agents.config import Settings
from agents.devtools.simulator import SCENARIOS, simulate
from schemas import load_zones

from .detection import LEVELS, REPO, ZONES_FILE, Run, Scored, median_delay, replay_live, score
from .detection import report as detail_report

LIVE_ENV = {"SAFETOUR_WINDOW_S": "60", "SAFETOUR_SLIDE_S": "5", "SAFETOUR_GRACE_S": "10",
            "SAFETOUR_IDLE_S": "30", "SAFETOUR_START": "from-start"}


@dataclass
class LiveRun:
    """One scenario x seed live: its scores (modes before, offline, after = live) and how
    well the machine kept up."""

    scenario: str
    seed: int
    speed: float
    scored: Scored
    publish_lag_s: float  # the publisher's largest lag behind its schedule, wall seconds
    alert_lag_s: list[float] = field(default_factory=list)  # live - offline, scenario s
    unmatched: int = 0  # live alerts with no offline twin (alert_id, seq), or the reverse


async def _read_all(bootstrap: str, topic: str, quiet_s: float = 3.0
                    ) -> list[tuple[int, bytes]]:
    """Every message of ``topic`` so far: (broker timestamp ms, value)."""
    from agents.kafka import as_config  # noqa: PLC0415

    cfg = as_config(bootstrap)
    consumer = cfg.consumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                            group_id=None)
    await cfg.start(consumer)
    out: list[tuple[int, bytes]] = []
    try:
        idle = 0.0
        while idle < quiet_s:
            got = await consumer.getmany(timeout_ms=500)
            batch = [m for msgs in got.values() for m in msgs]
            idle = idle + 0.5 if not batch else 0.0
            out += [(int(m.timestamp), m.value) for m in batch if m.value]
    finally:
        await consumer.stop()
    return out


def alert_lags(live: Run, offline: Run) -> tuple[list[float], int]:
    """Per alert of both runs (by ``alert_id``, ``seq``): live time - offline time, in s;
    and how many alerts are in one run only."""
    def by_key(run: Run) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for t, a in run.alerts:
            out.setdefault((str(a["alert_id"]), int(a.get("seq", 0))), t)
        return out

    a, b = by_key(live), by_key(offline)
    return [(a[k] - b[k]) / 1000 for k in a if k in b], len(a.keys() ^ b.keys())


def measure_live(bootstrap: str, scenario: str, seed: int, speed: float,
                 state_dir: Path) -> LiveRun:
    """One scenario through a real broker and a ``safetour worker``."""
    from agents.devtools.simulator import publish_live  # noqa: PLC0415
    from agents.topics import create_topics, topic_specs  # noqa: PLC0415

    from .e2e import free_port  # noqa: PLC0415

    zones = load_zones(ZONES_FILE)
    tag = uuid.uuid4().hex[:10]
    env = dict(os.environ, SAFETOUR_KAFKA_BOOTSTRAP=bootstrap,
               SAFETOUR_TOPIC_PREFIX=f"detect-{tag}.", SAFETOUR_APP_ID=f"detect-{tag}",
               SAFETOUR_STATE_DIR=str(state_dir / tag),
               SAFETOUR_WEB_PORT=str(free_port())) | LIVE_ENV
    settings = Settings.from_env(env)
    out = simulate(SCENARIOS[scenario], zones, seed=seed, grace_s=settings.grace_s)
    # Offline first: the same kernels, compiled on a cold numba cache here and not in the
    # worker while it is being timed (a first run stalled it by some 20 s: 200 s at 10x).
    cfg = settings.pipeline(zones).alerts.config
    offline = replay_live(out, zones, cfg, settings)
    before = replay_live(out, zones, cfg.legacy(), settings)
    asyncio.run(create_topics(bootstrap, topic_specs(settings.topics)))
    log = state_dir / f"worker-{tag}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    first = min(t for t, _, _ in [*out.events, *out.reports])
    lag = [0.0]
    with log.open("ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "agents", "worker"], env=env,
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO)
    try:
        deadline = time.monotonic() + 90
        while "[^Worker]: Ready" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; see {log}")
            time.sleep(0.2)
        wall0 = time.monotonic()

        def progress(_sent: int, _rate: float, scenario_ms: int) -> None:
            behind = time.monotonic() - wall0 - (scenario_ms - first) / 1000 / speed
            lag[0] = max(lag[0], behind)

        asyncio.run(publish_live(out, bootstrap, settings.topics.sensor_events,
                                 settings.topics.reports, speed=speed, progress=progress))
        time.sleep(max(2.0, (settings.window_s + settings.grace_s) / speed + 2))
        alerts = asyncio.run(_read_all(bootstrap, settings.topics.alerts))
        density = asyncio.run(_read_all(bootstrap, settings.topics.density))
        sent = asyncio.run(_read_all(bootstrap, settings.topics.sensor_events))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    # Wall time to scenario time: each sensor message's broker timestamp against the
    # delivery time the simulator gave it (re-sent duplicates share a value: first kept).
    due: dict[bytes, int] = {}
    for when, _, value in out.events:
        due.setdefault(value, when)
    offset = statistics.median(due[v] - ts * speed for ts, v in sent if v in due)
    live = Run([(round(ts * speed + offset), orjson.loads(v)) for ts, v in alerts],
               sorted((orjson.loads(v) for _, v in density), key=lambda d: d["window_end"]))
    scored = Scored()
    score(scenario, seed, out.truth, {"before": before, "offline": offline, "after": live},
          scored)
    lags, unmatched = alert_lags(live, offline)
    return LiveRun(scenario, seed, speed, scored, lag[0], lags, unmatched)


def _merge(scores: Sequence[Scored]) -> Scored:
    out = Scored()
    for s in scores:
        out.crossings += s.crossings
        out.brief += s.brief
        out.bumps += s.bumps
        for mine, theirs in ((out.false_alerts, s.false_alerts),
                             (out.false_criticals, s.false_criticals),
                             (out.episodes, s.episodes)):
            for m, n in theirs.items():
                mine[m] = mine.get(m, 0) + n
        for m, errs in s.eta_errors.items():
            out.eta_errors.setdefault(m, []).extend(errs)
        for m, n in s.eta_records.items():
            out.eta_records[m] = out.eta_records.get(m, 0) + n
    return out


def _d(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0f}"


def live_table(runs: Sequence[LiveRun]) -> str:
    """Per scenario (its seeds together): the median delay per level offline and live,
    false alerts, one id per bump, and whether the machine kept up."""
    lines = ["| scenario | seeds | speed | elevated (s) offline / live | high | critical "
             "| false alerts offline / live | false criticals live | bumps with one id, live "
             "| publisher behind, max (s) | live - offline per alert, median (max) (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    by: dict[str, list[LiveRun]] = {}
    for r in runs:
        by.setdefault(r.scenario, []).append(r)
    for name, rs in by.items():
        sc = _merge([r.scored for r in rs])
        cells = [" / ".join(_d(median_delay(sc, m, lv)) for m in ("offline", "after"))
                 for lv in LEVELS]
        lags = [x for r in rs for x in r.alert_lag_s]
        lag = (f"{statistics.median(lags):+.1f} ({max(lags, key=abs):+.1f})" if lags
               else "-")
        unmatched = sum(r.unmatched for r in rs)
        if unmatched:
            lag += f", {unmatched} unmatched"
        one = sum(1 for b in sc.bumps if b[4]["after"] == 1)
        lines.append(
            f"| {name} | {','.join(str(r.seed) for r in rs)} | "
            f"{'/'.join(sorted({f'{r.speed:g}x' for r in rs}))} | {' | '.join(cells)} | "
            f"{sc.false_alerts.get('offline', 0)} / {sc.false_alerts.get('after', 0)} | "
            f"{sc.false_criticals.get('after', 0)} | {one} of {len(sc.bumps)} | "
            f"{max(r.publish_lag_s for r in rs):.1f} | {lag} |")
    return "\n".join(lines) + "\n"


def _speeds(values: Sequence[str]) -> tuple[float, dict[str, float]]:
    default, per = 10.0, {}
    for v in values:
        name, eq, x = v.rpartition("=")
        if eq:
            per[name] = float(x)
        else:
            default = float(x)
    return default, per


def main_live(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.detection live")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--scenarios", "--scenario", default="crush",
                    help="comma-separated scenario names")
    ap.add_argument("--seeds", "--seed", default="1", help="comma-separated seeds")
    ap.add_argument("--speed", action="append", default=[],
                    help="how many times faster than real time (default 10); "
                         "SCENARIO=X for one scenario; may be repeated")
    ap.add_argument("--state-dir", default=str(REPO / ".safetour/detection"))
    ap.add_argument("--out", help="also write the live table to this file")
    args = ap.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    try:
        default, per = _speeds(args.speed)
    except ValueError:
        ap.error("--speed takes X or SCENARIO=X")
    runs = []
    for name in scenarios:
        for seed in seeds:
            t0 = time.monotonic()
            runs.append(measure_live(args.bootstrap, name, seed, per.get(name, default),
                                     Path(args.state_dir)))
            print(f"detection live: {name} seed {seed}: {time.monotonic() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    table = live_table(runs)
    print("Live over Kafka (live: the worker; offline: today's alarm on the same input; "
          "before: the legacy alarm offline)\n")
    print(table)
    print(detail_report(_merge([r.scored for r in runs]), scenarios, seeds), end="")
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    return 0
