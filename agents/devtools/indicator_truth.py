"""Ground truth of the indicators beyond density (``streams/indicators_flow.py``), from the
simulator's true density and true flows every 5 s: the same conditions as the indicators,
with their default thresholds, on what really happened instead of on what the sensors said.

- ``rate_of_rise``: the least-squares slope of the true density over the last 180 s at least
  0.2 p/m² per minute, at half the elevated threshold or more;
- ``flow_breakdown``: the true specific outflow over the last 60 s (the zone's departures
  through its counters with a ``width_m``, per metre per second) below 0.8 after it was at or
  above it in the last 300 s and 30 % below that peak, at half the elevated threshold or more,
  with the density rising (0.05 p/m² per minute over 180 s) or at 90 % of elevated;
- ``counter_flow``: a counter's true ``min(entries, exits)`` over the last 60 s at least 23 per
  metre per minute with a balance of 0.3 or more, at half the elevated threshold or more, with
  the density rising.

Episodes: runs of 5 s points where the condition holds (start, end of the run).
"""

from __future__ import annotations

import math
from typing import Any

from schemas import Kind, Zone
from streams.indicators_flow import FlowIndicatorConfig
from streams.levels import resolve_thresholds

__all__ = ["indicator_truth"]

STEP_MS = 5_000


def _slope_per_min(pts: list[tuple[int, float]]) -> float:
    n = len(pts)
    if n < 3:
        return 0.0
    xs = [t / 60_000 for t, _ in pts]
    mx = sum(xs) / n
    my = sum(d for _, d in pts) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (d - my) for x, (_, d) in zip(xs, pts, strict=True)) / sxx


def _runs(ts: list[int], flags: list[bool]) -> list[dict[str, int]]:
    out: list[dict[str, int]] = []
    cur: dict[str, int] | None = None
    for t, f in zip(ts, flags, strict=True):
        if f:
            if cur is None:
                cur = {"start_ms": t, "end_ms": t}
                out.append(cur)
            cur["end_ms"] = t
        else:
            cur = None
    return out


def indicator_truth(zone: Zone, series: list[tuple[int, float]],
                    flows: list[tuple[int, int]],
                    config: FlowIndicatorConfig | None = None) -> dict[str, Any]:
    """Episodes per indicator of one zone: ``series`` (ts, true density) and ``flows`` (true
    entries, exits in the 5 s up to each point), both every 5 s."""
    cfg = config or FlowIndicatorConfig()
    elevated = resolve_thresholds(zone.crowd, zone.thresholds).elevated
    widths = [s.width_m for s in zone.sensors if s.kind is Kind.LINE_COUNT and s.width_m]
    span = round(cfg.rise_span_s * 1000) // STEP_MS
    memory = round(cfg.breakdown_memory_s * 1000) // STEP_MS
    win = 60_000 // STEP_MS
    ts = [t for t, _ in series]
    rise, breakdown, counter = [], [], []
    pms_hist: list[float] = []
    for i, (_, d) in enumerate(series):
        slope = _slope_per_min(series[max(0, i - span):i + 1])
        crowded = d >= cfg.crowded_from * elevated
        rising = slope >= cfg.rising_per_min
        rise.append(crowded and i >= span and slope >= cfg.rise_per_min)
        ins = sum(f[0] for f in flows[max(0, i - win + 1):i + 1])
        outs = sum(f[1] for f in flows[max(0, i - win + 1):i + 1])
        if not widths or i < win:
            breakdown.append(False)
            counter.append(False)
            pms_hist.append(float("nan"))
            continue
        # Every counter of the zone counts its whole flow (the simulator's model).
        pms = len(widths) * outs / sum(widths) / 60
        pms_hist.append(pms)
        peak = max((p for p in pms_hist[max(0, i - memory):] if not math.isnan(p)), default=0.0)
        fell = pms < cfg.breakdown_pms <= peak and pms <= (1 - cfg.breakdown_drop) * peak
        breakdown.append(crowded and fell and (rising or d >= 0.9 * elevated))
        lo, hi = min(ins, outs), max(ins, outs)
        per_m = max(lo / w for w in widths)  # the narrowest counter
        counter.append(crowded and rising and per_m >= cfg.counterflow_per_m_min
                       and hi > 0 and lo / hi >= cfg.counterflow_balance)
    return {"rate_of_rise": _runs(ts, rise), "flow_breakdown": _runs(ts, breakdown),
            "counter_flow": _runs(ts, counter)}
