"""Hot-spot lead time and false alarms, against the simulator's ground truth.

    python -m benchmarks.lead_hotspot [--seeds 1,2,3,4,5] [--out FILE]

**Lead**: the ``wat-yai-hotspot`` scenario (a dense pocket in one 50 m cell of the Wat Yai
grounds while their mean stays low; the grounds fill later) is simulated per seed and its
deliveries fed through the real pipeline (``benchmarks.detection.replay_live``: production
settings, delivery order, the worker's ticks) twice: the indicator **on** (the registry as it
is) and **off** (the same registry without the zone's grid: the grid readings are
dead-lettered ``off_grid``, the alarm sees the mean only). Lead at a level = the first alert at
that level or above in the grounds, off minus on; *delay* = on minus the truth's first hot
cell at that level (the true densest cell, at least 1.25 x the true mean, at a level the
mean is not).

**False alarms**: every scenario x seed, indicator on: each alert with ``reason: hotspot``
that raises or escalates, with no true hot-spot episode (any level) from 2 minutes before it
to 2 minutes after (a window plus the on-delay). **Alert ids**: the grounds' episodes in the
"on" run (one per bump: the pocket, then the grounds' own fill, is one episode).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.config import Settings
from agents.devtools.simulator import SCENARIOS, simulate
from benchmarks.detection import RANK, ZONES_FILE, replay_live
from schemas import load_zones

SCENARIO = "wat-yai-hotspot"
ZONE = "wat-yai-grounds"
SLACK_MS = 120_000


def first_at(alerts: list[tuple[int, dict[str, Any]]], zone: str, level: str) -> int | None:
    for at, a in alerts:
        if a["zone_id"] == zone and RANK[a["level"]] >= RANK[level] and not a.get("reminder"):
            return at
    return None


def false_hotspots(alerts: list[tuple[int, dict[str, Any]]], truth: dict[str, Any]) -> int:
    n = 0
    for at, a in alerts:
        if a.get("reason") != "hotspot" or a["status"] not in ("raised", "escalated"):
            continue
        hot = truth["zones"].get(a["zone_id"], {}).get("hot", {}).get("episodes", {})
        eps = [e for lv in hot.values() for e in lv]
        if not any(e["start_ms"] - SLACK_MS <= at <= e["end_ms"] + SLACK_MS for e in eps):
            n += 1
    return n


def measure(seeds: Sequence[int], progress: bool = False) -> dict[str, Any]:
    zones = load_zones(ZONES_FILE)
    off_zones = [dataclasses.replace(z, grid=None) for z in zones]
    settings = Settings.from_env({})
    cfg = settings.pipeline(zones).alerts.config
    leads: list[dict[str, Any]] = []
    for seed in seeds:
        out = simulate(SCENARIOS[SCENARIO], zones, seed=seed, grace_s=settings.grace_s)
        on = replay_live(out, zones, cfg, settings)
        off = replay_live(out, off_zones, cfg, settings)
        hot = out.truth["zones"][ZONE]["hot"]["episodes"]
        row: dict[str, Any] = {"seed": seed, "false": false_hotspots(on.alerts, out.truth),
                               "episodes": len({a["alert_id"] for _, a in on.alerts
                                                if a["zone_id"] == ZONE})}
        for lv in ("elevated", "high"):
            t_on, t_off = first_at(on.alerts, ZONE, lv), first_at(off.alerts, ZONE, lv)
            truth_t = hot[lv][0]["start_ms"] if hot[lv] else None
            row[lv] = {"on": t_on, "off": t_off,
                       "lead_s": None if t_on is None or t_off is None else (t_off - t_on) / 1000,
                       "delay_s": None if t_on is None or truth_t is None
                       else (t_on - truth_t) / 1000}
        leads.append(row)
        if progress:
            print(f"lead_hotspot: {SCENARIO} seed {seed}", file=sys.stderr, flush=True)
    false: dict[str, list[int]] = {}
    for name in SCENARIOS:
        if name == SCENARIO:
            continue
        for seed in seeds:
            out = simulate(SCENARIOS[name], zones, seed=seed, grace_s=settings.grace_s)
            run = replay_live(out, zones, cfg, settings)
            false.setdefault(name, []).append(false_hotspots(run.alerts, out.truth))
            if progress:
                print(f"lead_hotspot: {name} seed {seed}", file=sys.stderr, flush=True)
    return {"leads": leads, "false": false}


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f}"


def report(m: dict[str, Any], seeds: Sequence[int]) -> str:
    lines = [f"Hot spot ({SCENARIO}, {ZONE}), seeds {','.join(map(str, seeds))}:", "",
             "| seed | level | delay after true hot cell, s | lead over density alarm, s "
             "| density alarm (off) | alert ids (on) |",
             "|---|---|---|---|---|---|"]
    for row in m["leads"]:
        for lv in ("elevated", "high"):
            r = row[lv]
            off = "never" if r["off"] is None else "fired"
            lines.append(f"| {row['seed']} | {lv} | {_s(r['delay_s'])} | {_s(r['lead_s'])} "
                         f"| {off} | {row['episodes']} |")
    for lv in ("elevated", "high"):
        got = [row[lv]["lead_s"] for row in m["leads"] if row[lv]["lead_s"] is not None]
        if got:
            lines.append(f"| median | {lv} | | {statistics.median(got):.0f} | | |")
    lines += ["", "False hot-spot alerts (raised or escalated, no true hot spot within 2 min):",
              "", "| scenario | per seed | total |", "|---|---|---|",
              f"| {SCENARIO} | {' '.join(str(r['false']) for r in m['leads'])} "
              f"| {sum(r['false'] for r in m['leads'])} |"]
    for name, per in m["false"].items():
        lines.append(f"| {name} | {' '.join(map(str, per))} | {sum(per)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lead_hotspot",
                                 description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--out", help="also write the Markdown tables to this file")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    text = report(measure(seeds, progress=True), seeds)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
