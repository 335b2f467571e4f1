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
- **forecast**: when the trend would take the zone to ``critical`` within ``horizon_s``
  (600 s) and that has held for the on-delay, an episode is raised early (``reason:
  forecast``) at ``elevated`` or the current level, whichever is higher;
- **report floor**: a human report can hold a zone at a level for ``report_hold_s``
  (900 s) whatever the sensors say (``reason: report``);
- **capacity**: a zone with a ``capacity`` also reaches elevated / high / critical at 85 % /
  100 % / 115 % of it in occupancy (``reason: capacity`` when occupancy alone gets it there);
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

import math
from dataclasses import dataclass, field

from schemas import Thresholds

from .levels import MOVING_DEFAULTS, STANDING_DEFAULTS, Level, level_for

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

    def __post_init__(self) -> None:
        if not 0 <= self.dead_band < 1:
            raise ValueError("dead_band must be in [0, 1)")
        if min(self.on_delay_s, self.off_delay_s, self.realarm_s, self.horizon_s) < 0:
            raise ValueError("delays must be >= 0")


@dataclass(frozen=True, slots=True)
class Transition:
    """A change the zone's alert must announce."""

    status: str  # raised | escalated | deescalated | resolved | updated
    level: Level
    previous: Level
    reason: str  # density | forecast | report | capacity | sensing_lost
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
        self, density: float, trend_per_min: float, ts_ms: int, occupancy: float = math.nan
    ) -> list[Transition]:
        """One density window ending at ``ts_ms``. NaN (no sensor reported) changes nothing
        but a report floor's expiry: a blind zone is not a calm zone."""
        cfg = self.config
        out: list[Transition] = []
        floor = self.floor if ts_ms < self.floor_until_ms else Level.NORMAL
        if math.isnan(density):
            # Blind: the level stands (a blind zone is not a calm zone), the operators hear
            # once that the zone is no longer seen, then ticks re-alarm it.
            if self.level >= Level.ELEVATED and not self.blind:
                self.blind = True
                out.append(self._update(ts_ms, "sensing_lost"))
            return out
        if self.blind:
            self.blind = False
            self.reason = "density"
            trs = self.observe(density, trend_per_min, ts_ms, occupancy)
            return trs or [self._update(ts_ms, "density")]
        ratio = occupancy / self.capacity if self.capacity else math.nan
        if (self.level is Level.NORMAL and floor is Level.NORMAL and not self.up_since
                and self.forecast_since is None and density < self.thresholds.elevated
                and not ratio >= CAPACITY_LEVELS.elevated):
            # Quiet zone, quiet window (most of them): nothing can change unless the
            # forecast starts; this path skips the rest of the state machine.
            eta = eta_critical_s(density, trend_per_min, self.thresholds.critical)
            if eta is None or eta > cfg.horizon_s:
                return out
        by_density = level_for(density, self.thresholds)
        raw = max(by_density, self._ratio_level(ratio))
        on_delay = 0 if ts_ms < self.corroborated_until_ms else round(cfg.on_delay_s * 1000)
        # Upward: the highest level held for the on-delay.
        for lv in (Level.ELEVATED, Level.HIGH, Level.CRITICAL):
            if self._reached(lv, density, ratio):
                self.up_since.setdefault(lv, ts_ms)
            else:
                self.up_since.pop(lv, None)
        held = [lv for lv, since in self.up_since.items() if ts_ms - since >= on_delay]
        up = Level(max(held)) if held else Level.NORMAL
        # Forecast: on course for critical within the horizon, held for the on-delay.
        eta = eta_critical_s(density, trend_per_min, self.thresholds.critical)
        if eta is not None and eta <= cfg.horizon_s and raw < Level.CRITICAL:
            if self.forecast_since is None:
                self.forecast_since = ts_ms
        else:
            self.forecast_since = None
        forecasting = self.forecast_since is not None and ts_ms - self.forecast_since >= on_delay
        target = max(up, floor)
        if target > self.level:
            reason = ("report" if up < floor
                      else "density" if by_density >= up else "capacity")
            out.append(self._move(target, ts_ms, reason))
            self.down_since = None
        elif self.level > Level.NORMAL:
            # Downward: below the current level's threshold minus the dead-band, for the
            # off-delay; then to the level the density is at now (never below the floor).
            cleared = (self.level > floor and self._cleared(self.level, density, ratio)
                       and not (forecasting and self.reason == "forecast"))
            if cleared:
                if self.down_since is None:
                    self.down_since = ts_ms
                if ts_ms - self.down_since >= round(cfg.off_delay_s * 1000):
                    lower = max(raw, floor)
                    if forecasting and lower < Level.ELEVATED:
                        lower = Level.ELEVATED
                    if lower < self.level:
                        out.append(self._move(lower, ts_ms, self.reason))
                    self.down_since = None
            else:
                self.down_since = None
        if self.level is Level.NORMAL and forecasting:
            out.append(self._move(max(raw, Level.ELEVATED), ts_ms, "forecast"))
        if (self.level is Level.CRITICAL and not out
                and ts_ms - self.last_sent_ms >= round(cfg.realarm_s * 1000)):
            out.append(self._reminder("raised", ts_ms))
        return out

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
        return Transition(status, level, previous, reason, start, seq=seq)


def eta_critical_s(density: float, trend_per_min: float, critical: float) -> float | None:
    """Seconds until ``critical`` at the current trend; None when not rising or already there."""
    if math.isnan(density) or math.isnan(trend_per_min) or trend_per_min <= 0:
        return None
    if density >= critical:
        return None
    return (critical - density) / trend_per_min * 60.0
