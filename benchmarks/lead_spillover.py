"""Spill-over lead time: how much earlier a zone hears of a neighbour spilling into it than
its own density alarm, and how often the spill-over fires where there is none.

    python -m benchmarks.lead_spillover [--seeds 1,2,3,4,5] [--scenarios all]
                                        [--out benchmarks/RESULTS-lead-spillover.md]

Each scenario x seed (``agents/devtools/simulator.py``) goes through the real pipeline as the
detection benchmark replays it (:func:`benchmarks.detection.replay_live`: production
settings, delivery order, the worker's ticks), with the spill-over **on** (the default
alarm) and, for scenarios with a spill in their ground truth (``truth["spills"]``), again
with it **off** (the same run, ``AlarmConfig(spillover=False)``); the flow indicators
(rate of rise, flow breakdown, counter-flow: ``benchmarks/lead_flow.py``) are off in both, so
the lead is the one over the density alarm alone.

- **lead**: for each true spill (receiving zone, neighbour, start), the receiving zone's
  first alert at elevated or above with the spill-over off (its density alarm, forecast
  included) minus its first alert with ``reason: spillover`` with it on, both from the
  spill's start less 10 minutes; also each one's delay after the truth's elevated crossing;
- **episodes per true spill**: the spill-over episodes raised in the receiving zone from
  that neighbour (from the spill's start less 10 minutes): one spill should be one episode;
- **seen by the rule**: the first window (from the spill's start less 10 minutes) in which
  the spill-over rule names that neighbour, and the shortest ETA to critical it gives for it
  before the zone's density alarm (off): the rule replayed on the run's density records
  (:func:`rule_trace`, as the alert tracker feeds it). A spill the rule sees whose ETA stays
  beyond the 600 s horizon raises no alert (a large zone that a small neighbour cannot
  fill in minutes: the bridge into the 40,000 m² grounds);
- **false spill-overs**: alerts with ``reason: spillover`` that no true spill explains
  (another zone, another neighbour, or before the spill's start less 10 minutes), over every
  scenario x seed; and spill-over episodes (raised by it) in zones whose truth never reaches
  elevated within 10 minutes of the episode's start.

A scenario without a true spill is run once (on): with no spill-over alert the alarm's input
is the same as with it off (the rule gives no ETA), so the runs would be equal.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.config import Settings
from agents.devtools.simulator import SCENARIOS, simulate
from schemas import Zone, load_zones, parse_ts
from streams.alarm import AlarmConfig
from streams.engine import DensityUpdate
from streams.levels import resolve_thresholds
from streams.spillover import Spill, SpillConfig, SpillWatch, density_from_record

from .detection import (
    LOOKBACK_MS,
    RANK,
    ZONES_FILE,
    Run,
    emit_report,
    replay_live,
    scenario_parser,
    scenario_values,
)


@dataclass
class Lead:
    scenario: str
    seed: int
    zone: str
    neighbour: str
    spill_ms: int
    truth_elevated_ms: int | None
    spill_alert_ms: int | None  # first reason: spillover alert (on)
    density_alert_ms: int | None  # first elevated+ alert with the spill-over off
    episodes: int = 0  # spill-over episodes (on) of this zone from this neighbour (ideally 1)
    seen_ms: int | None = None  # first window the rule names this neighbour (on)
    seen_eta_s: float | None = None  # its shortest ETA for it before the density alarm

    @property
    def lead_s(self) -> float | None:
        if self.spill_alert_ms is None or self.density_alert_ms is None:
            return None
        return (self.density_alert_ms - self.spill_alert_ms) / 1000


@dataclass
class Result:
    leads: list[Lead] = field(default_factory=list)
    false_spills: list[tuple[str, int, str, str, int]] = field(default_factory=list)
    false_episodes: int = 0
    false_episode_list: list[tuple[str, int, str, int]] = field(default_factory=list)
    spill_episodes: int = 0
    runs: int = 0


def _first(run: Run, zone: str, since_ms: int, *, reason: str | None = None) -> int | None:
    return next((t for t, a in run.alerts if a["zone_id"] == zone and t >= since_ms
                 and RANK.get(a["level"], 0) >= 1
                 and (reason is None or a["reason"] == reason)), None)


def _episodes(run: Run, zone: str, neighbour: str, since_ms: int) -> int:
    """Spill-over episodes raised in ``zone`` from ``neighbour`` since ``since_ms``."""
    return sum(1 for t, a in run.alerts if a["zone_id"] == zone and t >= since_ms
               and a["reason"] == "spillover" and a["status"] == "raised"
               and (a.get("spillover") or {}).get("neighbour") == neighbour)


def rule_trace(run: Run, zones: Sequence[Zone], zone_id: str, alarm: AlarmConfig
               ) -> list[tuple[int, Spill | None]]:
    """The spill-over rule's verdict on each of ``zone_id``'s density windows, replayed on
    the run's density records in their order: each neighbour's newest record (density not
    null) that ends before the window, as the alert tracker feeds the rule."""
    by_id = {z.zone_id: z for z in zones}
    zone = by_id[zone_id]
    elevated = {n.zone_id: resolve_thresholds(by_id[n.zone_id].crowd,
                                              by_id[n.zone_id].thresholds).elevated
                for n in zone.neighbours if n.zone_id in by_id}
    critical = resolve_thresholds(zone.crowd, zone.thresholds).critical
    watch = SpillWatch(SpillConfig(enabled=alarm.spillover, on_delay_s=alarm.on_delay_s))
    recent: dict[str, list[DensityUpdate]] = {}
    out: list[tuple[int, Spill | None]] = []
    for doc in run.density:
        u = density_from_record(doc)
        if u is None:
            continue
        if u.zone_id in elevated and not math.isnan(u.density):
            recent.setdefault(u.zone_id, []).append(u)
        if u.zone_id != zone_id:
            continue
        nbs = {n: (next((r for r in reversed(recent.get(n, []))
                         if r.window_end_ms < u.window_end_ms), None), el)
               for n, el in elevated.items()}
        out.append((u.window_end_ms, watch.assess(zone, u, critical, nbs)))
    return out


def _seen(trace: list[tuple[int, Spill | None]], neighbour: str, since_ms: int,
          until_ms: int | None) -> tuple[int | None, float | None]:
    """The first window from ``since_ms`` naming ``neighbour``, and the shortest ETA for it
    before ``until_ms`` (None: to the end)."""
    named = [(t, sp.eta_s) for t, sp in trace if sp is not None and sp.neighbour == neighbour
             and t >= since_ms]
    before = [eta for t, eta in named if until_ms is None or t <= until_ms]
    return (named[0][0] if named else None), (min(before) if before else None)


def _score_false(name: str, seed: int, truth: dict[str, Any], run: Run, into: Result) -> None:
    spills = truth.get("spills", [])
    for t, a in run.alerts:
        if a["reason"] != "spillover" or a["status"] != "raised":
            continue  # the episode's raise names its neighbour; what follows continues it
        frm = (a.get("spillover") or {}).get("neighbour", "?")
        ok = any(s["zone_id"] == a["zone_id"] and s["neighbour"] == frm
                 and t >= s["start_ms"] - LOOKBACK_MS for s in spills)
        if not ok:
            into.false_spills.append((name, seed, a["zone_id"], frm, t))
    starts = {a["alert_id"]: (a["zone_id"], parse_ts(a["episode_start"]))
              for _, a in run.alerts
              if a["reason"] == "spillover" and a["status"] == "raised"}
    into.spill_episodes += len(starts)
    for zid, st in starts.values():
        bumps = truth["zones"].get(zid, {}).get("episodes", {}).get("elevated", [])
        if not any(b["start_ms"] - LOOKBACK_MS <= st <= b["end_ms"] + LOOKBACK_MS
                   for b in bumps):
            into.false_episodes += 1
            into.false_episode_list.append((name, seed, zid, st))


def measure(scenarios: Sequence[str], seeds: Sequence[int], progress: bool = False,
            indicators: bool = False) -> Result:
    """By default the flow indicators are off (benchmarks/lead_flow.py measures them): the
    lead is over the density alarm alone. ``indicators``: on, as in production; the lead is
    then over every other alarm (a spill-over raises only a zone at normal)."""
    zones = load_zones(ZONES_FILE)
    settings = Settings.from_env({})
    full = settings.pipeline(zones).alerts.config
    on = full if indicators else dataclasses.replace(full,
                                                     indicators=full.indicators.only(None))
    off = dataclasses.replace(on, spillover=False)
    res = Result()
    for name in scenarios:
        for seed in seeds:
            t0 = time.monotonic()
            out = simulate(SCENARIOS[name], zones, seed=seed, grace_s=settings.grace_s)
            run_on = replay_live(out, zones, on, settings)
            res.runs += 1
            _score_false(name, seed, out.truth, run_on, res)
            spills = out.truth.get("spills", [])
            if spills:
                run_off = replay_live(out, zones, off, settings)
                for s in spills:
                    zid, since = s["zone_id"], s["start_ms"] - LOOKBACK_MS
                    eps = out.truth["zones"][zid]["episodes"]["elevated"]
                    density_ms = _first(run_off, zid, since)
                    seen_ms, seen_eta = _seen(rule_trace(run_on, zones, zid, on),
                                              s["neighbour"], since, density_ms)
                    res.leads.append(Lead(
                        name, seed, zid, s["neighbour"], s["start_ms"],
                        next((e["start_ms"] for e in eps if e["start_ms"] >= s["start_ms"]),
                             None),
                        _first(run_on, zid, since, reason="spillover"),
                        density_ms,
                        _episodes(run_on, zid, s["neighbour"], since), seen_ms, seen_eta))
            if progress:
                print(f"lead_spillover: {name} seed {seed}: {time.monotonic() - t0:.1f} s",
                      file=sys.stderr, flush=True)
    return res


def _s(ms: int | None, ref: int | None) -> str:
    return "-" if ms is None or ref is None else f"{(ms - ref) / 1000:+.0f}"


def report(res: Result, scenarios: Sequence[str], seeds: Sequence[int]) -> str:
    lines = [f"Spill-over lead ({', '.join(scenarios)}; seeds {', '.join(map(str, seeds))}; "
             f"{res.runs} runs)", "",
             "| scenario | seed | zone <- neighbour | spill-over alert | density alarm (off) "
             "| lead, s | episodes | rule sees it | shortest ETA, s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for ld in res.leads:
        ref = ld.truth_elevated_ms
        lines.append(f"| {ld.scenario} | {ld.seed} | {ld.zone} <- {ld.neighbour} | "
                     f"{_s(ld.spill_alert_ms, ref)} | {_s(ld.density_alert_ms, ref)} | "
                     f"{'missed' if ld.lead_s is None else f'{ld.lead_s:+.0f}'} | "
                     f"{ld.episodes} | {_s(ld.seen_ms, ref)} | "
                     f"{'-' if ld.seen_eta_s is None else f'{ld.seen_eta_s:.0f}'} |")
    leads = [x for ld in res.leads if (x := ld.lead_s) is not None]
    lines += ["", "Times are seconds after the truth's elevated crossing of the receiving "
              "zone (negative: before it). Rule sees it: the first window in which the "
              "spill-over rule names the neighbour; shortest ETA: to critical, before the "
              "density alarm (an alert needs it within the 600 s horizon).", "",
              f"- median lead: {statistics.median(leads):+.0f} s (min {min(leads):+.0f}, "
              f"max {max(leads):+.0f}) over {len(leads)} of {len(res.leads)} spills"
              if leads else "- no lead measured",
              f"- spill-over episodes per true spill (ideally 1): "
              f"{sum(ld.episodes for ld in res.leads) / len(res.leads):.2f} "
              f"(max {max(ld.episodes for ld in res.leads)}) over {len(res.leads)} spills"
              if res.leads else "- no true spill",
              f"- false spill-over alerts (no true spill explains them): "
              f"{len(res.false_spills)} over {res.runs} runs",
              f"- spill-over episodes: {res.spill_episodes}, of which in a zone with no truth "
              f"elevated episode near their start: {res.false_episodes}"]
    for name, seed, zid, frm, _t in res.false_spills[:10]:
        lines.append(f"  - false spill-over: {name} seed {seed}: {zid} <- {frm}")
    for name, seed, zid, st in res.false_episode_list[:10]:
        lines.append(f"  - episode with no truth elevated: {name} seed {seed}: {zid} at "
                     f"{st}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = scenario_parser("python -m benchmarks.lead_spillover", __doc__, "1,2,3,4,5")
    ap.add_argument("--with-indicators", action="store_true",
                    help="the flow indicators on, as in production (default: off, the lead "
                         "over density alone)")
    args = ap.parse_args(argv)
    scenarios, seeds, out = scenario_values(ap, args)
    res = measure(scenarios, seeds, progress=True, indicators=args.with_indicators)
    return emit_report(report(res, scenarios, seeds), out)


if __name__ == "__main__":
    sys.exit(main())
