"""Alarm discipline per zone: levels with on-delay, dead-band, off-delay and re-alarm.

A pure state machine driven by event time (the density windows' end times), after OPC UA
alarm practice (``docs/domain.md`` section 1, "Product practice"):

- **on-delay**: a higher level is raised only after the density has stayed at or above its
  threshold for ``on_delay_s`` (10 s); an ``overcrowding`` report from the last 10 minutes
  corroborates the sensors and removes the on-delay.
- **dead-band**: a level clears only when the density falls below ``(1 - dead_band)`` of its
  threshold (10 %), so a density hovering at a threshold does not flap;
- **off-delay**: ... and only after it has stayed there for ``off_delay_s`` (30 s);
- **re-alarm**: while a zone stays ``critical``, the alert is sent again every
  ``realarm_s`` (300 s), with ``reminder: true``;
- **rising edge**: for raising, the level estimate is the 60 s mean plus the Theil-Sen
  slope of the last window's records times half the window (the lag of a trailing mean on a
  steady rise), when that rise is significant, at most ``edge_cap`` (20 %) of the mean; the
  on-delay is then halved. The slope is the records' over the last half window when that
  is steeper and significant: in the first minute of a rise the whole window's lags;
- **forecast**: when the robust slope of the last minutes of records (:meth:`Trend.fit`)
  would take the true density to ``critical`` within ``horizon_s`` (600 s) and that has
  held for the on-delay, an episode is raised early (``reason: forecast``) at ``elevated``
  or the current level, whichever is higher; it clears only once the ETA has stayed beyond
  the horizon plus ``forecast_margin`` (50 %) for the off-delay;
- **spill-over**: a neighbour filling into the zone gives an ETA too
  (``streams/spillover.py``), treated as the forecast's (``reason: spillover``, same hold);
- **report floor**: a human report can hold a zone at a level for ``report_hold_s``
  (900 s) whatever the sensors say (``reason: report``);
- **capacity**: a zone with a ``capacity`` also reaches elevated / high / critical at 85 % /
  100 % / 115 % of it in occupancy (``reason: capacity`` when occupancy alone gets it there);
- **indicator floor** (issue 16, ``streams/indicators_flow.py``): while an indicator is active
  (rate of rise, flow breakdown, counter-flow; each with its own on-delay, off-delay and
  hysteresis) the zone is held at least at ``elevated`` with the indicator's reason;
- **sensing lost**: a zone at elevated or above whose sensors all stop (a window with no
  reading) gets an ``updated`` message on its open episode (``reason: sensing_lost``), is
  re-alarmed every ``realarm_s`` like a critical one, and never resolves by itself; when
  data returns, the episode goes on from the measured density (another ``updated``).

Every message of an episode carries ``seq`` (1 for the raise, then one more each), so
consumers deduplicate exactly by (alert_id, seq).

    level ─┐   normal ──(≥ thr, on-delay)──▶ raised ──▶ escalated / deescalated ──▶ resolved
           └─ one alert_id per episode: zone + event time of the episode start
"""

from __future__ import annotations

import bisect
import math
from array import array
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from schemas import Thresholds

from .indicators_flow import FlowIndicatorConfig, FlowIndicators, LineFlows
from .levels import MOVING_DEFAULTS, STANDING_DEFAULTS, Level, level_for
from .slope_kernels import Slope, fit_points

FORECAST_REASONS = frozenset({"forecast", "spillover"})
"""Reasons of a forecast-raised episode: held by the forecast hold (an ETA, not a level)."""
CAPACITY_LEVELS = Thresholds(elevated=0.85, high=1.0, critical=1.15)
"""Occupancy / capacity at which a zone with a capacity reaches each level."""


@dataclass(frozen=True, slots=True)
class AlarmConfig:
    on_delay_s: float = 10.0
    off_delay_s: float = 30.0
    dead_band: float = 0.10
    realarm_s: float = 300.0
    horizon_s: float = 600.0
    report_hold_s: float = 900.0
    corroboration_s: float = 600.0
    # A zone that has had no window for this long (world clock) is looked after by ticks:
    # its report floor expires and a blind episode is re-alarmed.
    quiet_s: float = 120.0
    standing: Thresholds = STANDING_DEFAULTS
    moving: Thresholds = MOVING_DEFAULTS
    # Rising edge: raise on the trailing mean plus its lag on a significant rise (the
    # slope over the last window times half the window), at most ``edge_cap`` of the mean.
    rising_edge: bool = True
    edge_cap: float = 0.2
    # The rising edge's slope is the steeper of the records' over the last window and over
    # its last half (both significant): at the start of a rise the former lags.
    edge_recent_half: bool = True
    # Forecast from a Theil-Sen slope over the last ``forecast_span_s`` of density records
    # (none before there are ``forecast_min_span_s`` of them). Off: the window's own trend.
    robust_forecast: bool = True
    forecast_span_s: float = 300.0
    forecast_min_span_s: float = 60.0
    # The records are kept one per ``trend_step_s``, and only while the density is at least
    # ``trend_from`` of the elevated threshold (or the zone is alerting).
    trend_step_s: float = 10.0
    trend_from: float = 0.5
    # A forecast-raised level clears only once the ETA has stayed beyond the horizon plus
    # this margin (a fraction of the horizon) for the off-delay.
    forecast_hold: bool = True
    forecast_margin: float = 0.5
    # Indicators beyond density (issue 16): the indicator floor.
    indicators: FlowIndicatorConfig = field(default_factory=FlowIndicatorConfig)
    # Spill-over forecasts from filling neighbours (streams/spillover.py; issue 16).
    spillover: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.dead_band < 1:
            raise ValueError("dead_band must be in [0, 1)")
        if min(self.on_delay_s, self.off_delay_s, self.realarm_s, self.horizon_s) < 0:
            raise ValueError("delays must be >= 0")
        if not 0 <= self.edge_cap <= 1:
            raise ValueError("edge_cap must be in [0, 1]")
        if self.forecast_margin < 0 or self.forecast_min_span_s > self.forecast_span_s:
            raise ValueError("forecast_margin must be >= 0 and forecast_min_span_s <= "
                             "forecast_span_s")

    def new_trend(self, window_ms: int = 0) -> Trend:
        """An empty record history as the alarm keeps it (span and step)."""
        return Trend(round(max(self.forecast_span_s * 1000, window_ms)),
                     round(self.trend_step_s * 1000), window_ms)

    def legacy(self) -> AlarmConfig:
        """This configuration as the alarm was before issue 15: no rising edge, the
        window's own trend for forecasts, no forecast hold, no indicators, no spill-over (for
        measurements)."""
        return replace(self, rising_edge=False, robust_forecast=False, forecast_hold=False,
                       indicators=self.indicators.only(None), spillover=False)


@dataclass(frozen=True, slots=True)
class Transition:
    """A change the zone's alert must announce."""

    status: str  # raised | escalated | deescalated | resolved | updated
    level: Level
    previous: Level
    # density | forecast | spillover | report | capacity | sensing_lost | hotspot | an
    # indicator's (rate_of_rise, flow_breakdown, counter_flow)
    reason: str
    episode_start_ms: int
    reminder: bool = False
    seq: int = 1


@dataclass(slots=True)
class ZoneAlarm:
    """The alarm state of one zone. Feed it :meth:`observe` in event-time order."""

    thresholds: Thresholds
    config: AlarmConfig = field(default_factory=AlarmConfig)
    capacity: int | None = None
    level: Level = Level.NORMAL
    episode_start_ms: int | None = None
    reason: str = "density"
    last_sent_ms: int = 0
    # Since when (event time, ms) the density has held at/above each level's threshold.
    up_since: dict[int, int] = field(default_factory=dict)
    down_since: int | None = None
    forecast_since: int | None = None
    floor: Level = Level.NORMAL
    floor_until_ms: int = 0
    corroborated_until_ms: int = 0
    blind: bool = False  # every sensor stopped while the episode was open
    seq: int = 0  # messages of the open episode so far
    # Since when (event time, ms) the forecast ETA has been beyond the horizon plus margin.
    forecast_far_since: int | None = None
    # The recent density records (rising edge, robust forecast); None until the first.
    trend: Trend | None = None
    # The indicators beyond density (None until the first window, or when all are off).
    flow: FlowIndicators | None = None
    # The level estimate for raising of the newest window (its density plus the rising
    # edge's boost; NaN: none yet). Not in snapshots: each window sets it anew.
    estimate: float = math.nan

    def _threshold(self, level: Level) -> float:
        t = self.thresholds
        return (t.elevated if level is Level.ELEVATED else t.high if level is Level.HIGH
                else t.critical)

    def report_floor(self, level: Level, ts_ms: int) -> list[Transition]:
        """A human report holds the zone at ``level`` (at least) for the report hold time."""
        until = ts_ms + round(self.config.report_hold_s * 1000)
        if level >= self.floor or ts_ms >= self.floor_until_ms:
            self.floor, self.floor_until_ms = level, max(until, self.floor_until_ms)
        if level > self.level:
            return [self._move(level, ts_ms, "report")]
        return []

    def corroborate(self, ts_ms: int) -> None:
        """An overcrowding report: sensors' rises need no on-delay for a while."""
        self.corroborated_until_ms = ts_ms + round(self.config.corroboration_s * 1000)

    def _ratio_level(self, ratio: float) -> Level:
        return Level.NORMAL if math.isnan(ratio) else level_for(ratio, CAPACITY_LEVELS)

    def _reached(self, lv: Level, density: float, ratio: float) -> bool:
        return density >= self._threshold(lv) or (
            not math.isnan(ratio) and ratio >= getattr(CAPACITY_LEVELS, lv.wire))

    def _cleared(self, lv: Level, density: float, ratio: float) -> bool:
        band = 1 - self.config.dead_band
        by_capacity = math.isnan(ratio) or ratio < getattr(CAPACITY_LEVELS, lv.wire) * band
        return density < self._threshold(lv) * band and by_capacity

    def observe(
        self, density: float, trend_per_min: float, ts_ms: int, occupancy: float = math.nan,
        window_ms: int = 0, hot: Level = Level.NORMAL, flows: LineFlows | None = None,
        spill_eta_s: float | None = None,
    ) -> list[Transition]:
        """One density window ending at ``ts_ms`` (``window_ms`` long: a trailing mean lags
        a rise by half of it; 0: unknown, no rising edge). NaN (no sensor reported) changes
        nothing but a report floor's expiry: a blind zone is not a calm zone. ``hot``: the
        level the zone's densest grid cell holds (``streams/hotspot.py``; its own on- and
        off-delay done), which raises and holds the zone like a floor (``reason: hotspot``).
        ``flows``: the line counters' outflow and counter-flow (``streams/indicators_flow.py``).
        ``spill_eta_s``: a spill-over ETA (``streams/spillover.py``), taken as a forecast's
        (``reason: spillover`` when it alone is within the horizon)."""
        cfg = self.config
        out: list[Transition] = []
        floor = self.floor if ts_ms < self.floor_until_ms else Level.NORMAL
        if math.isnan(density):
            self.estimate = math.nan
            # Blind: the level stands (a blind zone is not a calm zone), the operators hear
            # once that the zone is no longer seen, then ticks re-alarm it.
            if self.level >= Level.ELEVATED and not self.blind:
                self.blind = True
                out.append(self._update(ts_ms, "sensing_lost"))
            return out
        if self.blind:
            self.blind = False
            self.reason = "density"
            trs = self.observe(density, trend_per_min, ts_ms, occupancy, window_ms, hot, flows,
                               spill_eta_s)
            return trs or [self._update(ts_ms, "density")]
        if cfg.rising_edge or cfg.robust_forecast:
            if (density < cfg.trend_from * self.thresholds.elevated
                    and self.level is Level.NORMAL and self.forecast_since is None):
                self.trend = None  # far below any level: no history kept
            else:
                if self.trend is None:
                    self.trend = cfg.new_trend(window_ms)
                self.trend.add(ts_ms, density)
        ind, ind_reason = Level.NORMAL, ""
        if self.flow is not None or FlowIndicators.needed(cfg.indicators, density,
                                                          self.thresholds.elevated, flows):
            if self.flow is None:
                self.flow = FlowIndicators(cfg.indicators)
            ind, ind_reason = self.flow.update(ts_ms, density, self.thresholds.elevated,
                                               self.trend, flows or LineFlows())
            if self.flow.idle():
                self.flow = None
        ratio = occupancy / self.capacity if self.capacity else math.nan
        self.estimate = density
        edge = cfg.edge_cap if cfg.rising_edge and window_ms > 0 else 0.0
        quiet = (self.level is Level.NORMAL and floor is Level.NORMAL and not self.up_since
                 and hot is Level.NORMAL and ind is Level.NORMAL
                 and self.forecast_since is None
                 and density * (1 + edge) < self.thresholds.elevated
                 and not ratio >= CAPACITY_LEVELS.elevated)
        # Quiet zone, quiet window (most of them): nothing can change unless the forecast
        # starts; this path skips the rest of the state machine.
        eta = self._eta(density, trend_per_min, window_ms, busy=not quiet)
        own_eta = eta
        if spill_eta_s is not None and (eta is None or spill_eta_s < eta):
            eta = spill_eta_s
        if quiet and (eta is None or eta > cfg.horizon_s):
            return out
        boost = (self.trend.rising_boost(window_ms, edge, cfg.edge_recent_half)
                 if edge and self.trend is not None
                 and density * (1 + edge) >= self.thresholds.elevated else 0.0)
        rising = density + boost  # the level estimate for raising
        self.estimate = rising
        by_density = level_for(density, self.thresholds)
        raw = max(by_density, self._ratio_level(ratio))
        on_delay = 0 if ts_ms < self.corroborated_until_ms else round(cfg.on_delay_s * 1000)
        if boost > 0:
            on_delay //= 2  # a significant rise is no passing spike: half the on-delay
        # Upward: the highest level held for the on-delay.
        for lv in (Level.ELEVATED, Level.HIGH, Level.CRITICAL):
            if self._reached(lv, rising, ratio):
                self.up_since.setdefault(lv, ts_ms)
            else:
                self.up_since.pop(lv, None)
        held = [lv for lv, since in self.up_since.items() if ts_ms - since >= on_delay]
        up = Level(max(held)) if held else Level.NORMAL
        # Forecast: on course for critical within the horizon, held for the on-delay.
        if eta is not None and eta <= cfg.horizon_s and raw < Level.CRITICAL:
            if self.forecast_since is None:
                self.forecast_since = ts_ms
        else:
            self.forecast_since = None
        if eta is None or eta > cfg.horizon_s * (1 + cfg.forecast_margin):
            if self.forecast_far_since is None:
                self.forecast_far_since = ts_ms
        else:
            self.forecast_far_since = None
        forecasting = self.forecast_since is not None and ts_ms - self.forecast_since >= on_delay
        # A forecast-raised level stands while the ETA is within the horizon plus margin.
        holding = self.reason in FORECAST_REASONS and (
            forecasting or (cfg.forecast_hold and self.forecast_far_since is None))
        held_floor = max(floor, ind)  # the report floor and the indicator floor
        target = max(up, held_floor, hot)
        if target > self.level:
            reason = ("hotspot" if hot > max(up, held_floor)
                      else ("report" if floor >= ind else ind_reason) if up < held_floor
                      else "density" if level_for(rising, self.thresholds) >= up
                      else "capacity")
            out.append(self._move(target, ts_ms, reason))
            self.down_since = None
        elif self.level > Level.NORMAL:
            # Downward: below the current level's threshold minus the dead-band, for the
            # off-delay; then to the level the density is at now (never below the floor).
            cleared = (self.level > held_floor and self._cleared(self.level, density, ratio)
                       and not holding)
            if cleared:
                if self.down_since is None:
                    self.down_since = ts_ms
                if ts_ms - self.down_since >= round(cfg.off_delay_s * 1000):
                    lower = max(raw, held_floor, hot)
                    if (forecasting or holding) and lower < Level.ELEVATED:
                        lower = Level.ELEVATED
                    if lower < self.level:
                        why = "hotspot" if hot == lower > max(raw, held_floor) else self.reason
                        out.append(self._move(lower, ts_ms, why))
                        self.down_since = None
                    elif hot < self.level:
                        self.down_since = None
                    # (held by a hot spot: the mean's off-delay has run; it goes with it)
            else:
                self.down_since = None
        if self.level is Level.NORMAL and forecasting:
            own = own_eta is not None and own_eta <= cfg.horizon_s
            out.append(self._move(max(raw, Level.ELEVATED), ts_ms,
                                  "forecast" if own else "spillover"))
        if (self.level is Level.CRITICAL and not out
                and ts_ms - self.last_sent_ms >= round(cfg.realarm_s * 1000)):
            out.append(self._reminder("raised", ts_ms))
        return out

    def _eta(self, density: float, trend_per_min: float, window_ms: int, *, busy: bool
             ) -> float | None:
        """Seconds until the true density reaches critical: the robust forecast (none
        before there is history enough; unless a forecast is running, only computed when a
        crude slope says critical could be in reach: at a third of the pace it needs), or
        in the legacy mode the window's own trend."""
        cfg = self.config
        critical = self.thresholds.critical
        t = self.trend
        min_span = round(cfg.forecast_min_span_s * 1000)
        if cfg.robust_forecast:
            # No forecast before there is history enough: one window's trend, at start-up
            # or after a gap, is too noisy to raise on.
            if t is None or not t.ready(min_span):
                return None
            if not busy or (self.forecast_since is None and self.reason not in FORECAST_REASONS):
                # Not forecasting: the fit only when a crude slope says it might start.
                newest = t.ts[-1]
                crude = max(t.rise_per_s(newest - t.span_ms),
                            t.rise_per_s(newest - min_span))
                need = (critical - density) / (cfg.horizon_s + window_ms / 2000)
                if crude < need / 3:
                    return None
            fc = t.forecast(critical, window_ms, min_span)
            return None if fc is None else fc.eta_s
        return eta_critical_s(density, trend_per_min, critical)

    def forecast(self, window_ms: int) -> Forecast | None:
        """The robust forecast now, with its range (for the alert); None without one."""
        min_span = round(self.config.forecast_min_span_s * 1000)
        if not self.config.robust_forecast or self.trend is None or not self.trend.ready(
                min_span):
            return None
        return self.trend.forecast(self.thresholds.critical, window_ms, min_span)

    def tick(self, now_ms: int) -> list[Transition]:
        """Time passes for a zone that gets no windows (blind, or without sensors): its
        report floor expires, and a blind or critical episode is re-alarmed."""
        if self.level is Level.NORMAL:
            return []
        realarm = round(self.config.realarm_s * 1000)
        if self.blind:
            if now_ms - self.last_sent_ms >= realarm:
                return [self._reminder("updated", now_ms)]
            return []
        floor = self.floor if now_ms < self.floor_until_ms else Level.NORMAL
        if self.reason == "report" and floor < self.level:
            return [self._move(floor, now_ms, "report")]
        if self.level is Level.CRITICAL and now_ms - self.last_sent_ms >= realarm:
            return [self._reminder("raised", now_ms)]
        return []

    def _reminder(self, status: str, ts_ms: int) -> Transition:
        assert self.episode_start_ms is not None
        self.last_sent_ms = ts_ms
        self.seq += 1
        return Transition(status, self.level, self.level, self.reason, self.episode_start_ms,
                          reminder=True, seq=self.seq)

    def _update(self, ts_ms: int, reason: str) -> Transition:
        """A message on the open episode that changes no level (sensing lost or back)."""
        assert self.episode_start_ms is not None
        self.reason = reason
        self.last_sent_ms = ts_ms
        self.seq += 1
        return Transition("updated", self.level, self.level, reason, self.episode_start_ms,
                          seq=self.seq)

    def _move(self, level: Level, ts_ms: int, reason: str) -> Transition:
        previous = self.level
        if previous is Level.NORMAL:
            status = "raised"
            self.episode_start_ms = ts_ms
            self.seq = 0
        elif level is Level.NORMAL:
            status = "resolved"
        else:
            status = "escalated" if level > previous else "deescalated"
        start = self.episode_start_ms
        assert start is not None
        self.level = level
        self.reason = reason
        self.last_sent_ms = ts_ms
        self.seq += 1
        seq = self.seq
        if level is Level.NORMAL:
            self.episode_start_ms = None
            self.reason = "density"
            self.blind = False
            self.forecast_far_since = None
        return Transition(status, level, previous, reason, start, seq=seq)


def eta_critical_s(density: float, trend_per_min: float, critical: float) -> float | None:
    """Seconds until ``critical`` at the current trend; None when not rising or already there."""
    if math.isnan(density) or math.isnan(trend_per_min) or trend_per_min <= 0:
        return None
    if density >= critical:
        return None
    return (critical - density) / trend_per_min * 60.0


@dataclass(frozen=True, slots=True)
class Forecast:
    """When the true density reaches critical (seconds from the newest window's end), with a
    range from the slope's confidence bounds; ``hi`` None: not bounded (the slope's lower
    bound is not rising)."""

    eta_s: float
    lo_s: float
    hi_s: float | None


@dataclass(slots=True)
class Trend:
    """A zone's recent density records (window end, trailing mean), for robust slopes: the
    rising edge (the last window's worth, ``recent_ms``: every record) and the forecast
    (the last ``span_ms``: one point per ``step_ms`` before the last window), in two flat
    arrays: a zone keeps about 36 points (5 s slides, 60 s window, 10 s step)."""

    span_ms: int
    step_ms: int = 0
    recent_ms: int = 0  # the last window: every record kept
    ts: array[int] = field(default_factory=lambda: array("q"))
    values: array[float] = field(default_factory=lambda: array("d"))
    # Fits of the current records by (records, start, step), and the records as numpy
    # arrays: the alarm, the forecast, the indicators and the alert's text fit the same
    # points in one window. Both are dropped when a record comes in.
    memo: dict[tuple[int, int, int], Slope | None] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    arrays: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None = field(
        default=None, init=False, repr=False, compare=False)

    def add(self, ts_ms: int, density: float) -> None:
        if math.isnan(density):
            return
        ts, values = self.ts, self.values
        if ts and ts_ms <= ts[-1]:
            return  # a window already seen (records come in event-time order)
        self.memo.clear()
        self.arrays = None
        ts.append(ts_ms)
        values.append(density)
        # A point that has just left the last window goes if it is less than a step after
        # the one before it: the older part of the history is one point per step.
        b = bisect.bisect_left(ts, ts_ms - self.recent_ms)
        if b >= 2 and ts[b - 1] - ts[b - 2] < self.step_ms:
            del ts[b - 1]
            del values[b - 1]
        cut = ts_ms - self.span_ms
        k = 0
        while ts[k] < cut:
            k += 1
        if k:
            del ts[:k]
            del values[:k]

    @property
    def points(self) -> list[tuple[int, float]]:
        return list(zip(self.ts, self.values, strict=True))

    def ready(self, min_span_ms: int) -> bool:
        """History enough for a forecast: 5 points over at least ``min_span_ms``."""
        ts = self.ts
        return len(ts) >= 5 and ts[-1] - ts[0] >= min_span_ms

    def fit_since(self, since_ms: int, max_points: int = 0) -> Slope | None:
        """Theil–Sen over the records at or after ``since_ms``; with ``max_points``, at most
        that many of them, evenly spaced, the newest always kept (every ``step``-th back from
        it, ``step`` the fewest that keeps at most ``max_points``). Fits of the same points
        are computed once per record (:attr:`memo`)."""
        ts = self.ts
        i = bisect.bisect_left(ts, since_ms)
        k = len(ts) - i
        step = -(-k // max_points) if max_points and k else 1
        start = i + (k - 1) % step
        key = (len(ts), start, step)
        memo = self.memo
        if key in memo:
            return memo[key]
        if self.arrays is None or len(self.arrays[0]) != len(ts):
            self.arrays = (np.array(ts, dtype=np.int64), np.array(self.values, dtype=np.float64))
        fit = memo[key] = fit_points(self.arrays[0], self.arrays[1], start, step)
        return fit

    def rise_per_s(self, since_ms: int) -> float:
        """The crude slope from the first point at or after ``since_ms`` to the newest."""
        ts, values = self.ts, self.values
        i = bisect.bisect_left(ts, since_ms)
        if i >= len(ts) - 1:
            return 0.0
        return (values[-1] - values[i]) / ((ts[-1] - ts[i]) / 1000)

    def rising_boost(self, window_ms: int, cap: float, recent_half: bool = True) -> float:
        """How far the trailing mean of a ``window_ms`` window lags a steady rise: the slope
        over the last window times half the window, when the rise is significant (the
        slope's lower bound above 0); at most ``cap`` times the newest mean. 0 otherwise.
        With ``recent_half``, the slope over the last half window instead when that is
        steeper and significant too: in the first minute of a rise the means' slope grows
        (the window fills with the rise), and the slope over the whole window lags it."""
        if window_ms <= 0 or not self.ts:
            return 0.0
        newest, mean = self.ts[-1], self.values[-1]
        if self.rise_per_s(newest - window_ms) <= 0:
            return 0.0  # not even the crude rise over the window: no fit needed
        fit = self.fit_since(newest - window_ms)
        if fit is None or fit.lo <= 0:
            return 0.0
        slope = fit.slope
        if recent_half:
            half = self.fit_since(newest - window_ms // 2)
            if half is not None and half.lo > 0 and half.slope > slope:
                slope = half.slope
        return min(slope * window_ms / 2000.0, cap * mean)

    def fit(self, min_span_ms: int, max_points: int = 20) -> Slope | None:
        """Theil–Sen over the most recent steady stretch: from the last ``min_span_ms``,
        the stretch doubles back in time while the longer fit's slope stays inside the
        shorter one's confidence bounds (a crowd that started to rise, or rises faster
        now, ends the stretch there), up to the whole span."""
        oldest, newest = self.ts[0], self.ts[-1]
        span = min_span_ms
        fit = self.fit_since(newest - span, max_points)
        while fit is not None and newest - oldest > span:
            span *= 2
            longer = self.fit_since(newest - span, max_points)
            if longer is None or not fit.lo <= longer.slope <= fit.hi:
                break
            fit = longer
        return fit

    def forecast(self, critical: float, window_ms: int, min_span_ms: int,
                 max_points: int = 20) -> Forecast | None:
        """The ETA to ``critical`` from the robust line (:meth:`fit`), corrected for the
        trailing mean's lag (half the window). None: too little history, not rising, or
        already there."""
        if not self.ready(min_span_ms):
            return None
        fit = self.fit(min_span_ms, max_points)
        if fit is None or fit.slope <= 0:
            return None
        lag = window_ms / 2000.0
        gap = critical - fit.now
        if gap <= 0:
            return None

        def eta(slope: float) -> float:
            return max(0.0, gap / slope - lag)

        return Forecast(eta(fit.slope), eta(fit.hi) if fit.hi > 0 else 0.0,
                        eta(fit.lo) if fit.lo > 0 else None)
