"""Indicators beyond density (issue 16, part a): rate of rise, flow breakdown, counter-flow.

Each indicator, while *active*, holds its zone at least at ``elevated`` with its own alert
``reason`` (the *indicator floor*, like the report floor of :class:`streams.alarm.ZoneAlarm`);
the episode then goes on with the density levels as usual (an indicator never raises above
``elevated`` by itself). Every indicator is debounced like the density levels: it becomes
active once its raise condition has held for ``on_delay_s``, and inactive once its (weaker)
keep condition has failed for ``off_delay_s`` (hysteresis), so one bump gives one episode.

Thresholds and their sources (``docs/domain.md`` section 6, Fruin's table in section 1):

- **rate_of_rise**: the robust (Theil-Sen) slope of the zone's density records over the last
  ``rise_span_s`` (180 s) at least ``rise_per_min`` (0.2 p/m² per minute: Itaewon near the
  end, +1 p/m² per 5 minutes) with its lower confidence bound above 0, at a density of at least
  ``crowded_from`` (half) of the elevated threshold (1.0 p/m² standing: Still's "free" band
  ends there; 0.54 moving); kept while the slope stays at least ``rise_keep_per_min`` (0.1).
  An ordinary evening swells at 0.03-0.06 p/m² per minute.
- **flow_breakdown**: the zone's specific outflow (exits per metre of counted width per
  second, line counters with ``width_m``) below ``breakdown_pms`` (0.8 p/m/s: Jamarat 2006,
  laminar flow turned to stop-and-go below it) after it was at or above it within
  ``breakdown_memory_s`` (300 s), and at least ``breakdown_drop`` (30 %) below that recent
  peak, while the zone is crowded (half the elevated threshold) and the density rises (slope
  at least ``rising_per_min``, 0.05 p/m² per minute) or is near elevated (90 %); kept while the
  outflow stays below 1.25 times the threshold and the zone crowded.
- **counter_flow**: one counter's smaller direction, ``min(entries, exits)`` per metre per
  minute, at least ``counterflow_per_m_min`` (23: Fruin's LOS A ends there, so both streams
  are more than a free flow), with a balance ``min / max`` of at least
  ``counterflow_balance`` (0.3: a real second stream, not a trickle; a project choice), while
  the zone is crowded and its density rises (0.05 p/m² per minute, lower bound above 0): two
  streams meeting in a filling zone (Itaewon's alley); kept while both stay at 80 % of their
  thresholds, the zone crowded and still filling (half that slope).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .levels import Level

if TYPE_CHECKING:
    from .alarm import Trend
    from .engine import DensityUpdate

__all__ = ["INDICATOR_REASONS", "FlowIndicatorConfig", "FlowIndicators", "Hold", "LineFlows",
           "indicator_evidence"]

INDICATOR_REASONS = ("flow_breakdown", "counter_flow", "rate_of_rise")
"""The indicators' alert reasons, in the order one is named when several are active."""


class LineFlows(NamedTuple):
    """A window's line-counter flows (``streams.engine.DensityUpdate``); NaN: unknown."""

    outflow_per_m_s: float = math.nan
    counterflow_per_m_min: float = math.nan
    counterflow_balance: float = math.nan


@dataclass(frozen=True, slots=True)
class FlowIndicatorConfig:
    rate_of_rise: bool = True
    flow_breakdown: bool = True
    counter_flow: bool = True
    on_delay_s: float = 15.0
    off_delay_s: float = 60.0
    crowded_from: float = 0.5  # of the elevated threshold
    rise_span_s: float = 180.0
    rise_min_span_s: float = 90.0
    rise_per_min: float = 0.2
    rise_keep_per_min: float = 0.1
    rising_per_min: float = 0.05
    breakdown_pms: float = 0.8
    breakdown_drop: float = 0.3
    breakdown_memory_s: float = 300.0
    counterflow_per_m_min: float = 23.0
    counterflow_balance: float = 0.3

    def __post_init__(self) -> None:
        if min(self.on_delay_s, self.off_delay_s, self.rise_span_s) < 0:
            raise ValueError("delays and spans must be >= 0")
        if not 0 <= self.breakdown_drop < 1 or not 0 <= self.counterflow_balance <= 1:
            raise ValueError("breakdown_drop must be in [0, 1), counterflow_balance in [0, 1]")
        if self.rise_keep_per_min > self.rise_per_min:
            raise ValueError("rise_keep_per_min must be <= rise_per_min")

    @property
    def any(self) -> bool:
        return self.rate_of_rise or self.flow_breakdown or self.counter_flow

    def only(self, reason: str | None) -> FlowIndicatorConfig:
        """This configuration with only the indicator ``reason`` on (None: all off)."""
        from dataclasses import replace  # noqa: PLC0415

        return replace(self, rate_of_rise=reason == "rate_of_rise",
                       flow_breakdown=reason == "flow_breakdown",
                       counter_flow=reason == "counter_flow")


@dataclass(slots=True)
class Hold:
    """On-delay / off-delay with hysteresis: active once ``raise_now`` has held for the
    on-delay, inactive once ``keep`` has failed for the off-delay (event time, ms)."""

    active: bool = False
    since: int | None = None  # the raise condition has held since (while inactive)
    failing_since: int | None = None  # the keep condition has failed since (while active)

    def update(self, ts_ms: int, raise_now: bool, keep: bool, on_ms: int, off_ms: int) -> bool:
        if not self.active:
            if not raise_now:
                self.since = None
            else:
                if self.since is None:
                    self.since = ts_ms
                if ts_ms - self.since >= on_ms:
                    self.active, self.since, self.failing_since = True, None, None
        elif keep:
            self.failing_since = None
        else:
            if self.failing_since is None:
                self.failing_since = ts_ms
            if ts_ms - self.failing_since >= off_ms:
                self.active, self.failing_since = False, None
        return self.active


@dataclass(slots=True)
class FlowIndicators:
    """The indicators of one zone. Feed :meth:`update` every window, in event-time order."""

    config: FlowIndicatorConfig = field(default_factory=FlowIndicatorConfig)
    holds: dict[str, Hold] = field(default_factory=lambda: {r: Hold() for r in INDICATOR_REASONS})
    # The specific outflow's recent values, as a sliding maximum (a monotonic deque).
    peak: deque[tuple[int, float]] = field(default_factory=deque)
    slope_per_min: float = math.nan  # the last robust slope computed (for the metrics)

    @staticmethod
    def needed(config: FlowIndicatorConfig, density: float, elevated: float,
               flows: LineFlows | None) -> bool:
        """Whether a zone without indicator state needs one for this window: it is crowded,
        or a counter with a width measures its outflow (the breakdown's memory). Calm zones
        keep none (100,000 zones), and the alarm drops it again once :meth:`idle`."""
        return config.any and ((density >= config.crowded_from * elevated)
                               or (config.flow_breakdown and flows is not None
                                   and not math.isnan(flows.outflow_per_m_s)))

    def idle(self) -> bool:
        """Nothing active, nothing pending, no outflow remembered: the state can go."""
        return not self.peak and all(not h.active and h.since is None
                                     for h in self.holds.values())

    def update(self, ts_ms: int, density: float, elevated: float, trend: Trend | None,
               flows: LineFlows) -> tuple[Level, str]:
        """The indicator floor after this window: (``elevated``, reason) while one is active,
        else (``normal``, "")."""
        cfg = self.config
        crowded = not math.isnan(density) and density >= cfg.crowded_from * elevated
        keep_crowded = not math.isnan(density) and density >= 0.9 * cfg.crowded_from * elevated
        pms = flows.outflow_per_m_s
        peak = self._peak(ts_ms, pms) if cfg.flow_breakdown else math.nan
        need_fit = crowded or any(h.active for h in self.holds.values())
        slope, lo = self._slope(trend) if need_fit else (math.nan, math.nan)
        self.slope_per_min = slope
        rising = slope >= cfg.rising_per_min and lo > 0
        on_ms = round(cfg.on_delay_s * 1000)
        off_ms = round(cfg.off_delay_s * 1000)
        active: list[str] = []
        if cfg.flow_breakdown:
            fell = (pms < cfg.breakdown_pms and peak >= cfg.breakdown_pms
                    and pms <= (1 - cfg.breakdown_drop) * peak)
            near = density >= 0.9 * elevated
            raise_now = crowded and fell and (rising or near)
            keep = keep_crowded and pms < 1.25 * cfg.breakdown_pms
            if self.holds["flow_breakdown"].update(ts_ms, raise_now, keep, on_ms, off_ms):
                active.append("flow_breakdown")
        if cfg.counter_flow:
            xf, bal = flows.counterflow_per_m_min, flows.counterflow_balance
            raise_now = (crowded and rising and xf >= cfg.counterflow_per_m_min
                         and bal >= cfg.counterflow_balance)
            keep = (keep_crowded and xf >= 0.8 * cfg.counterflow_per_m_min
                    and bal >= 0.8 * cfg.counterflow_balance
                    and slope >= 0.5 * cfg.rising_per_min)
            if self.holds["counter_flow"].update(ts_ms, raise_now, keep, on_ms, off_ms):
                active.append("counter_flow")
        if cfg.rate_of_rise:
            raise_now = crowded and slope >= cfg.rise_per_min and lo > 0
            keep = keep_crowded and slope >= cfg.rise_keep_per_min
            if self.holds["rate_of_rise"].update(ts_ms, raise_now, keep, on_ms, off_ms):
                active.append("rate_of_rise")
        if not active:
            return Level.NORMAL, ""
        return Level.ELEVATED, active[0]

    def _peak(self, ts_ms: int, pms: float) -> float:
        """The largest specific outflow of the last ``breakdown_memory_s`` (this one too)."""
        q = self.peak
        if not math.isnan(pms):
            while q and q[-1][1] <= pms:
                q.pop()
            q.append((ts_ms, pms))
        cut = ts_ms - round(self.config.breakdown_memory_s * 1000)
        while q and q[0][0] < cut:
            q.popleft()
        return q[0][1] if q else math.nan

    def _slope(self, trend: Trend | None) -> tuple[float, float]:
        """The Theil-Sen slope of the last ``rise_span_s`` of records and its lower bound,
        p/m² per minute; NaN with too little history."""
        if trend is None or len(trend.ts) < 5:
            return math.nan, math.nan
        ts = trend.ts
        newest = ts[-1]
        since = newest - round(self.config.rise_span_s * 1000)
        first = bisect.bisect_left(ts, since)  # the records at or after it: ts[first:]
        if len(ts) - first < 5 or newest - ts[first] < round(self.config.rise_min_span_s * 1000):
            return math.nan, math.nan
        fit = trend.fit_since(since, 20)
        if fit is None:
            return math.nan, math.nan
        return fit.slope * 60, fit.lo * 60

    def export_state(self) -> dict[str, Any]:  # (for the alert tracker's snapshots)
        return {"holds": {r: [h.active, h.since, h.failing_since] for r, h in self.holds.items()},
                "peak": [[t, v] for t, v in self.peak]}

    def import_state(self, state: dict[str, Any]) -> None:
        for r, (active, since, failing) in state.get("holds", {}).items():
            if r in self.holds:
                self.holds[r] = Hold(bool(active), since, failing)
        self.peak = deque((int(t), float(v)) for t, v in state.get("peak", []))


def _num(x: float, digits: int) -> float | None:
    return None if math.isnan(x) else round(x, digits)


def indicator_evidence(u: DensityUpdate, flow: FlowIndicators | None) -> dict[str, float | None]:
    """The ``flows`` object of an indicator's alert: what the indicators saw in the window
    (null: not measured)."""
    return {"outflow_per_m_s": _num(u.outflow_per_m_s, 3),
            "counterflow_per_m_min": _num(u.counterflow_per_m_min, 2),
            "counterflow_balance": _num(u.counterflow_balance, 3),
            "rise_per_min": None if flow is None else _num(flow.slope_per_min, 4)}
