"""Lead benchmark of the indicators beyond density (issue 16, part a): rate of rise, flow
breakdown, counter-flow, against the density alarm and the simulator's ground truth.

    python -m benchmarks.lead_flow [--seeds 1,2,3,4,5] [--out benchmarks/RESULTS-lead-flow.md]

Every run goes through the real :class:`streams.pipeline.Pipeline` with the production
settings (:func:`benchmarks.detection.replay_live`, delivery time as the clock).

- **lead**: on each indicator's own scenario and zone (``OWN``), the zone's first alert with
  every indicator off minus its first alert with only that indicator on (s; positive: the
  indicator is earlier), and the delay of that first alert after the indicator's true start
  (``indicator_truth`` in the simulator);
- **false alarms**: with every indicator on, over every scenario x seed, the episodes raised
  with the indicator's reason that have no true episode of that indicator in the zone from 10
  minutes before their start to 10 minutes after (and, as in the detection benchmark, those
  with no true elevated bump within 10 minutes: ``no bump``);
- **episodes per bump** on the own zones: alert ids whose episode started from 10 minutes
  before the bump to its end (ideally 1: the indicator does not flap).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agents.config import Settings
from agents.devtools.simulator import SCENARIOS, simulate
from benchmarks.detection import (
    LOOKBACK_MS,
    ZONES_FILE,
    emit_report,
    merge,
    replay_live,
    scenario_args,
)
from schemas import load_zones, parse_ts
from streams.alarm import AlarmConfig
from streams.indicators_flow import INDICATOR_REASONS

OWN = {"rate_of_rise": ("rapid-fill", "station-forecourt"),
       "flow_breakdown": ("vihara-door", "wat-yai-vihara"),
       "counter_flow": ("counter-flow", "walking-street")}


@dataclass
class Scores:
    leads: dict[str, list[float | None]] = field(default_factory=dict)
    after_truth: dict[str, list[float | None]] = field(default_factory=dict)
    per_bump: dict[str, list[int]] = field(default_factory=dict)
    raised: dict[str, int] = field(default_factory=dict)  # episodes raised by the reason
    false: dict[str, int] = field(default_factory=dict)
    no_bump: dict[str, int] = field(default_factory=dict)
    false_where: dict[str, list[str]] = field(default_factory=dict)


def _first(alerts: list[tuple[int, dict[str, Any]]], zone: str) -> int | None:
    return next((t for t, a in alerts if a["zone_id"] == zone and a["status"] == "raised"),
                None)


def _episodes(alerts: list[tuple[int, dict[str, Any]]], zone: str
              ) -> dict[str, tuple[int, str]]:
    """alert_id -> (episode start, reason of its first message)."""
    out: dict[str, tuple[int, str]] = {}
    for _, a in alerts:
        if a["zone_id"] == zone:
            out.setdefault(a["alert_id"], (parse_ts(a["episode_start"]), a["reason"]))
    return out


def measure(seeds: Sequence[int], scenarios: Sequence[str], progress: bool = False) -> Scores:
    zones = load_zones(ZONES_FILE)
    settings = Settings.from_env({})
    base: AlarmConfig = settings.pipeline(zones).alerts.config
    off = replace(base, indicators=base.indicators.only(None))
    sc = Scores()
    for r in INDICATOR_REASONS:
        for d in (sc.leads, sc.after_truth, sc.per_bump, sc.false_where):
            d[r] = []
        sc.raised[r] = sc.false[r] = sc.no_bump[r] = 0
    for name in scenarios:
        for seed in seeds:
            out = simulate(SCENARIOS[name], zones, seed=seed, grace_s=settings.grace_s)
            run = replay_live(out, zones, base, settings)
            for zid, zt in out.truth["zones"].items():
                bumps = merge(zt["episodes"]["elevated"])
                for _aid, (start, reason) in _episodes(run.alerts, zid).items():
                    if reason not in sc.raised:
                        continue
                    sc.raised[reason] += 1
                    truth = zt["indicators"][reason]
                    if not any(int(e["start_ms"]) - LOOKBACK_MS <= start
                               <= int(e["end_ms"]) + LOOKBACK_MS for e in truth):
                        sc.false[reason] += 1
                        sc.false_where[reason].append(f"{name}/{seed}/{zid}")
                    if not any(b0 - LOOKBACK_MS <= start <= b1 + LOOKBACK_MS
                               for b0, b1 in bumps):
                        sc.no_bump[reason] += 1
            for r, (own, zone) in OWN.items():
                if own != name:
                    continue
                alone = replay_live(out, zones, replace(base, indicators=base.indicators.only(r)),
                                    settings)
                dens = replay_live(out, zones, off, settings)
                t_on, t_off = _first(alone.alerts, zone), _first(dens.alerts, zone)
                sc.leads[r].append(None if t_on is None or t_off is None
                                   else (t_off - t_on) / 1000)
                truth = out.truth["zones"][zone]["indicators"][r]
                sc.after_truth[r].append(None if t_on is None or not truth
                                         else (t_on - int(truth[0]["start_ms"])) / 1000)
                starts = [s for s, _ in _episodes(alone.alerts, zone).values()]
                for b0, b1 in merge(out.truth["zones"][zone]["episodes"]["elevated"]):
                    sc.per_bump[r].append(sum(1 for s in starts if b0 - LOOKBACK_MS <= s <= b1))
            if progress:
                print(f"lead_flow: {name} seed {seed}", file=sys.stderr, flush=True)
    return sc


def _fmt(xs: list[float | None]) -> str:
    return " ".join("none" if x is None else f"{x:+.0f}" for x in xs)


def _median(xs: list[float | None]) -> str:
    v = [x for x in xs if x is not None]
    return f"{statistics.median(v):+.0f}" if v else "none"


def report(sc: Scores, seeds: Sequence[int], scenarios: Sequence[str]) -> str:
    lines = [f"Scenarios: {', '.join(scenarios)}; seeds: {', '.join(map(str, seeds))}. "
             f"Regenerate with `python -m benchmarks.lead_flow --seeds "
             f"{','.join(map(str, seeds))}`.", "",
             "| indicator | own scenario / zone | lead over density, s (median; per seed) "
             "| after the true start, s | episodes per bump | raised (all scenarios) "
             "| false alarms | no bump |",
             "|---|---|---|---|---|---|---|---|"]
    for r in INDICATOR_REASONS:
        own, zone = OWN[r]
        lines.append(
            f"| {r} | {own} / {zone} | {_median(sc.leads[r])} ({_fmt(sc.leads[r])}) "
            f"| {_median(sc.after_truth[r])} | {' '.join(map(str, sc.per_bump[r]))} "
            f"| {sc.raised[r]} | {sc.false[r]} | {sc.no_bump[r]} |")
    where = [f"{r}: {', '.join(w)}" for r, w in sc.false_where.items() if w]
    if where:
        lines += ["", "False alarms: " + "; ".join(where)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    scenarios, seeds, out = scenario_args("python -m benchmarks.lead_flow", __doc__, argv,
                                          "1,2,3,4,5")
    return emit_report(report(measure(seeds, scenarios, progress=True), seeds, scenarios), out)


if __name__ == "__main__":
    raise SystemExit(main())
