"""Detection benchmark: how early, how steady and how true the alerts are, against the
simulator's ground truth.

    python -m benchmarks.detection [--seeds 1,2,3] [--scenarios crush,songkran]
                                   [--out benchmarks/RESULTS-detection.md]
    python -m benchmarks.detection live --bootstrap HOST:PORT [--scenarios crush]
                                        [--seeds 1] [--speed 10]   (detection_live.py)

Every scenario (``agents/devtools/simulator.py``) x seed is simulated and its deliveries fed,
in delivery order, through the real :class:`streams.pipeline.Pipeline` with the production
settings (60 s window, 5 s slide, 10 s grace), offline: the wall clock is the simulated
delivery time, so the grace and the gateways' jitter count. An alert's time is the delivery
time of the message that produced it (when a worker would publish it). Each run is done twice
in the same process: **before** (the alarm as it was: :meth:`AlarmConfig.legacy`) and
**after** (the rising edge, the robust forecast and the forecast hold).

Measures, per zone and level (elevated, high, critical):

- **crossings**: the truth (true density every 5 s) at or above the level, episodes less
  than 5 minutes apart merged; only those that last at least a window (60 s) are scored
  (a shorter one is one a 60 s mean cannot see, listed as brief). Delay = the first alert at
  that level or above, at or after the crossing less 10 minutes, minus the crossing
  (negative: ahead of the truth, a forecast); none within the episode: missed;
- **bumps**: truth elevated episodes (merged the same way); the alert ids whose episode
  started from 10 minutes before the bump to its end, ideally exactly one;
- **false alerts**: alert episodes with no truth elevated episode from 10 minutes after
  their start back to the start less 10 minutes; **false criticals**: critical alerts in a
  zone whose truth never reached critical;
- **ETA error**: in the last 10 minutes before each critical crossing, every density record's
  forecast crossing time (its window end + ETA) minus the true crossing, median absolute
  error (before: the window's trend; after: the alarm's robust forecast, the same code);
  over every record that has an ETA, and over the forecasts (ETA within the horizon: those
  that raise an alert and that operators act on).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from agents.config import Settings
from agents.devtools.simulator import SCENARIOS, SimOutput, simulate
from schemas import Thresholds, Zone, load_zones, parse_ts
from streams.alarm import CAPACITY_LEVELS, AlarmConfig, eta_critical_s
from streams.levels import level_for
from streams.pipeline import Pipeline
from streams.records import SourceMessage

REPO = Path(__file__).resolve().parents[1]
ZONES_FILE = REPO / "deploy/zones/phitsanulok.yaml"
LEVELS = ("elevated", "high", "critical")
RANK = {"normal": 0, "elevated": 1, "high": 2, "critical": 3}
MERGE_MS = 300_000  # truth episodes closer than this are one bump
LOOKBACK_MS = 600_000  # an alert this long before a crossing still counts for it (forecast)
TICK_MS = 2_000  # the worker's tick, in delivery time
TARGET_DELAY_S = 30.0
HORIZON_S = AlarmConfig().horizon_s


@dataclass
class Run:
    """One scenario x seed x mode: what the pipeline published, and when."""

    alerts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (time, alert)
    density: list[dict[str, Any]] = field(default_factory=list)


def replay_live(out: SimOutput, zones: Sequence[Zone], alarm: AlarmConfig,
                settings: Settings) -> Run:
    """The deliveries through a Pipeline in delivery order, the wall clock at each one's
    delivery time, with the worker's ticks in between."""
    now = [0]

    def clock() -> datetime:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=now[0])

    pipe = Pipeline(zones, engine=settings.density_engine(zones), alarm=alarm, clock=clock,
                    max_skew_ms=round(settings.max_skew_s * 1000))
    merged = sorted([(t, 0, k, v) for t, k, v in out.events]
                    + [(t, 1, k, v) for t, k, v in out.reports], key=lambda d: (d[0], d[1]))
    run = Run()
    next_tick = merged[0][0] if merged else 0

    def take(o: Any, at: int) -> None:
        run.alerts += [(at, orjson.loads(r.value)) for r in o.alerts]
        run.density += [orjson.loads(r.value) for r in o.density]

    for i, (when, kind, key, value) in enumerate(merged):
        while next_tick <= when:
            now[0] = next_tick
            take(pipe.tick(next_tick), next_tick)
            next_tick += TICK_MS
        now[0] = when
        msg = SourceMessage("reports" if kind else "sensors", 0, i, when, key, value)
        take((pipe.process_report_batch if kind else pipe.process_sensor_batch)(
            [msg], now_ms=when), when)
    end = merged[-1][0] if merged else 0
    for t in range(next_tick, end + 120_000, TICK_MS):  # the clock runs on past the input
        now[0] = t
        take(pipe.tick(t), t)
    return run


def merge(episodes: Iterable[dict[str, Any]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for ep in episodes:
        s, e = int(ep["start_ms"]), int(ep["end_ms"])
        if out and s - out[-1][1] < MERGE_MS:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def truth_episodes(zt: dict[str, Any]) -> dict[str, list[tuple[int, int]]]:
    """Per level, the truth's episodes by the alarm's own rules: the true density against
    the thresholds, the true occupancy against the zone's capacity (``CAPACITY_LEVELS``), and
    the zone's densest grid cell (its hot-spot truth, zones with a grid), merged
    (``MERGE_MS``)."""
    th = Thresholds(**zt["thresholds"])
    cap, area = zt.get("capacity"), float(zt["area_m2"])
    hot = (zt.get("hot") or {}).get("episodes", {})
    out: dict[str, list[tuple[int, int]]] = {}
    for lv in LEVELS:
        raw: list[list[int]] = []
        cur: list[int] | None = None
        for ts, d in zt["series"]:
            level = level_for(d, th)
            if cap:
                level = max(level, level_for(d * area / cap, CAPACITY_LEVELS))
            if level >= RANK[lv]:
                if cur is None:
                    cur = [int(ts), int(ts)]
                    raw.append(cur)
                cur[1] = int(ts)
            else:
                cur = None
        raw += [[int(e["start_ms"]), int(e["end_ms"])] for e in hot.get(lv, [])]
        raw.sort()
        out[lv] = merge({"start_ms": a, "end_ms": b} for a, b in raw)
    return out


def alert_for(alerts: Sequence[tuple[int, dict[str, Any]]], level: str, start_ms: int,
              end_ms: int) -> int | None:
    """When a zone's alerts (in time order) stood at ``level`` or above for a crossing from
    ``start_ms`` to ``end_ms``: the first such alert from ``start_ms - LOOKBACK_MS`` on, or,
    when the zone already stood there before that (an episode an earlier cause raised), the
    time it got there; None: not within the episode."""
    since: int | None = None
    for t, a in alerts:
        if t > end_ms:
            break
        if RANK.get(a["level"], 0) >= RANK[level] and a["status"] != "resolved":
            if since is None:
                since = t
            if t >= start_ms - LOOKBACK_MS:
                return since
        else:
            since = None
    return since


@dataclass
class Crossing:
    scenario: str
    seed: int
    zone: str
    level: str
    truth_ms: int
    end_ms: int
    alert_ms: dict[str, int | None] = field(default_factory=dict)  # mode -> alert time

    def delay(self, mode: str) -> float | None:
        a = self.alert_ms.get(mode)
        return None if a is None else (a - self.truth_ms) / 1000


@dataclass
class Scored:
    crossings: list[Crossing] = field(default_factory=list)
    brief: int = 0
    bumps: list[tuple[str, int, str, int, dict[str, int]]] = field(default_factory=list)
    false_alerts: dict[str, int] = field(default_factory=dict)
    false_criticals: dict[str, int] = field(default_factory=dict)
    eta_errors: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    eta_records: dict[str, int] = field(default_factory=dict)  # records in the 10 min
    episodes: dict[str, int] = field(default_factory=dict)


def score(scenario: str, seed: int, truth: dict[str, Any], runs: dict[str, Run],
          into: Scored) -> None:
    for mode in runs:
        into.false_alerts.setdefault(mode, 0)
        into.false_criticals.setdefault(mode, 0)
        into.eta_errors.setdefault(mode, [])
        into.eta_records.setdefault(mode, 0)
        into.episodes.setdefault(mode, 0)
    for zid, zt in truth["zones"].items():
        eps = truth_episodes(zt)
        zone_alerts = {mode: [(t, a) for t, a in run.alerts if a["zone_id"] == zid]
                       for mode, run in runs.items()}
        for lv in LEVELS:
            for s, e in eps[lv]:
                if e - s < 60_000:
                    into.brief += 1
                    continue
                c = Crossing(scenario, seed, zid, lv, s, e)
                for mode in runs:
                    c.alert_ms[mode] = alert_for(zone_alerts[mode], lv, s, e)
                into.crossings.append(c)
        ids_by_mode: dict[str, dict[str, int]] = {}
        for mode, run in runs.items():
            starts: dict[str, int] = {}
            for _, a in run.alerts:
                if a["zone_id"] == zid:
                    starts.setdefault(a["alert_id"], parse_ts(a["episode_start"]))
            ids_by_mode[mode] = starts
            into.episodes[mode] += len(starts)
            bumps = eps["elevated"]
            into.false_alerts[mode] += sum(
                1 for st in starts.values()
                if not any(b0 - LOOKBACK_MS <= st <= b1 + LOOKBACK_MS for b0, b1 in bumps))
            if not eps["critical"]:
                into.false_criticals[mode] += len(
                    {a["alert_id"] for _, a in run.alerts
                     if a["zone_id"] == zid and a["level"] == "critical"})
        for b0, b1 in eps["elevated"]:
            if b1 - b0 < 60_000:
                continue
            counts = {mode: sum(1 for st in starts.values() if b0 - LOOKBACK_MS <= st <= b1)
                      for mode, starts in ids_by_mode.items()}
            into.bumps.append((scenario, seed, zid, b0, counts))
        for s, _ in eps["critical"]:
            for mode, run in runs.items():
                errs, n = eta_errors(run.density, zid, s, zt["thresholds"]["critical"],
                                     robust=mode != "before")
                into.eta_errors[mode] += errs
                into.eta_records[mode] += n


def eta_errors(density: list[dict[str, Any]], zone_id: str, crossing_ms: int,
               critical: float, *, robust: bool) -> tuple[list[tuple[float, float]], int]:
    """(|forecast crossing - true crossing|, ETA) in s of every record in the 10 minutes
    before the crossing that has an ETA, and how many records there were."""
    cfg = AlarmConfig()
    trend = cfg.new_trend()
    min_span = round(cfg.forecast_min_span_s * 1000)
    errs: list[tuple[float, float]] = []
    n = 0
    for rec in density:
        if rec["zone_id"] != zone_id or rec.get("density") is None:
            continue
        end = parse_ts(rec["window_end"])
        window = end - parse_ts(rec["window_start"])
        trend.add(end, float(rec["density"]))
        if not crossing_ms - LOOKBACK_MS <= end < crossing_ms:
            continue
        n += 1
        if robust:
            fc = trend.forecast(critical, window, min_span) if trend.ready(min_span) else None
            eta = None if fc is None else fc.eta_s
        else:
            tr = rec.get("trend_per_min")
            eta = eta_critical_s(float(rec["density"]), math.nan if tr is None else tr,
                                 critical)
        if eta is not None:
            errs.append((abs(end + eta * 1000 - crossing_ms) / 1000, eta))
    return errs, n


def measure(scenarios: Sequence[str], seeds: Sequence[int],
            progress: bool = False) -> Scored:
    zones = load_zones(ZONES_FILE)
    settings = Settings.from_env({})
    base = settings.pipeline(zones).alerts.config
    modes = {"before": base.legacy(), "after": base}
    scored = Scored()
    for name in scenarios:
        for seed in seeds:
            t0 = time.monotonic()
            out = simulate(SCENARIOS[name], zones, seed=seed, grace_s=settings.grace_s)
            runs = {m: replay_live(out, zones, cfg, settings) for m, cfg in modes.items()}
            score(name, seed, out.truth, runs, scored)
            if progress:
                print(f"detection: {name} seed {seed}: {time.monotonic() - t0:.1f} s",
                      file=sys.stderr, flush=True)
    return scored


def median_delay(scored: Scored, mode: str, level: str | None = None) -> float | None:
    ds = [d for c in scored.crossings if level is None or c.level == level
          if (d := c.delay(mode)) is not None]
    return statistics.median(ds) if ds else None


def _fmt(x: float | None) -> str:
    return "missed" if x is None else f"{x:+.0f}"


def _ts(ms: int, start: str) -> str:
    t0 = datetime.fromisoformat(start)
    return str(timedelta(seconds=round((ms - t0.timestamp() * 1000) / 1000)))


def report(scored: Scored, scenarios: Sequence[str], seeds: Sequence[int]) -> str:
    starts = {n: SCENARIOS[n].start.isoformat() for n in scenarios}
    lines = [f"Scenarios: {', '.join(scenarios)}; seeds: {', '.join(map(str, seeds))}. "
             "Regenerate with `python -m benchmarks.detection --seeds "
             f"{','.join(map(str, seeds))}`.", ""]
    lines += ["| | before | after |", "|---|---|---|"]
    for lv in (*LEVELS, None):
        lines.append(f"| median delay, {lv or 'all levels'} (s) | "
                     f"{_fmt(median_delay(scored, 'before', lv))} | "
                     f"{_fmt(median_delay(scored, 'after', lv))} |")
    lines.append(f"| missed crossings (of {len(scored.crossings)}) | " + " | ".join(
        str(sum(1 for c in scored.crossings if c.delay(m) is None))
        for m in ("before", "after")) + " |")
    lines.append("| bumps with exactly one alert id (of "
                 f"{len(scored.bumps)}) | " + " | ".join(
                     str(sum(1 for b in scored.bumps if b[4][m] == 1))
                     for m in ("before", "after")) + " |")
    lines.append("| alert ids in all | " + " | ".join(
        str(scored.episodes[m]) for m in ("before", "after")) + " |")
    lines.append("| false alerts | " + " | ".join(
        str(scored.false_alerts[m]) for m in ("before", "after")) + " |")
    lines.append("| false criticals | " + " | ".join(
        str(scored.false_criticals[m]) for m in ("before", "after")) + " |")
    for what, within in (("every record with an ETA", math.inf),
                         ("forecasts (ETA within the 600 s horizon)", HORIZON_S)):
        row = []
        for m in ("before", "after"):
            errs = [e for e, eta in scored.eta_errors[m] if eta <= within]
            med = f"{statistics.median(errs):.0f}" if errs else "-"
            row.append(f"{med} ({len(errs)} of {scored.eta_records[m]} records)")
        lines.append(f"| ETA median abs. error (s), last 10 min before critical: {what} | "
                     + " | ".join(row) + " |")
    lines += ["", "Per crossing, one row per zone and level, one value per seed in seed order "
              f"(brief truth episodes under 60 s, not scored: {scored.brief}). Truth: when "
              "the true density crossed the level (from the scenario's start); delays in s "
              "from then to the alert at that level or above, negative = ahead of the "
              "truth:", "",
              "| scenario | zone | level | truth crossed | delay before | delay after |",
              "|---|---|---|---|---|---|"]
    rows: dict[tuple[str, str, str], list[Crossing]] = {}
    for c in scored.crossings:
        rows.setdefault((c.scenario, c.zone, c.level), []).append(c)
    for (sc, zid, lv), cs in rows.items():
        lines.append(f"| {sc} | {zid} | {lv} | "
                     f"{' '.join(_ts(c.truth_ms, starts[sc]) for c in cs)} | "
                     f"{' '.join(_fmt(c.delay('before')) for c in cs)} | "
                     f"{' '.join(_fmt(c.delay('after')) for c in cs)} |")
    lines += ["", "Alert ids per bump (truth at elevated or above, 5-minute gaps merged), one "
              "value per bump and seed:", "",
              "| scenario | zone | bumps | ids before | ids after |", "|---|---|---|---|---|"]
    bumps: dict[tuple[str, str], list[dict[str, int]]] = {}
    for sc, _seed, zid, _b0, counts in scored.bumps:
        bumps.setdefault((sc, zid), []).append(counts)
    for (sc, zid), per in bumps.items():
        lines.append(f"| {sc} | {zid} | {len(per)} | "
                     f"{' '.join(str(c['before']) for c in per)} | "
                     f"{' '.join(str(c['after']) for c in per)} |")
    return "\n".join(lines) + "\n"


def scenario_parser(prog: str, doc: str | None, default_seeds: str) -> argparse.ArgumentParser:
    """The scenario benchmarks' parser (this one, ``lead_flow``, ``lead_spillover``):
    ``--seeds``, ``--scenarios`` and ``--out``; a benchmark may add its own options."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0] if doc else None)
    ap.add_argument("--seeds", default=default_seeds)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--out", help="also write the Markdown report to this file")
    return ap


def scenario_args(prog: str, doc: str | None, argv: Sequence[str] | None,
                  default_seeds: str) -> tuple[list[str], list[int], str | None]:
    """The scenario benchmarks' arguments: ``--seeds``, ``--scenarios`` (known ones only)
    and ``--out``."""
    ap = scenario_parser(prog, doc, default_seeds)
    return scenario_values(ap, ap.parse_args(argv))


def scenario_values(ap: argparse.ArgumentParser, args: argparse.Namespace
                    ) -> tuple[list[str], list[int], str | None]:
    """Seeds, scenarios (known ones only, else ``ap.error``) and ``--out`` of ``args``."""
    seeds = [int(s) for s in args.seeds.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return scenarios, seeds, args.out


def emit_report(text: str, out: str | None) -> int:
    """Print a benchmark's Markdown report, and write it to ``out`` if given."""
    print(text, end="")
    if out:
        Path(out).write_text(text, encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["live"]:
        from .detection_live import main_live  # noqa: PLC0415

        return main_live(args_in[1:])
    scenarios, seeds, out = scenario_args("python -m benchmarks.detection", __doc__, args_in,
                                          "1,2,3")
    return emit_report(report(measure(scenarios, seeds, progress=True), scenarios, seeds), out)


if __name__ == "__main__":
    raise SystemExit(main())
