"""Alerts: density windows and human reports through each zone's alarm (``alarm.py``).

``alert_id`` is derived from the zone and the event time at which the episode started, so the
same input replayed, or re-processed by a restarted worker, gives the same id.

Human reports (``report.v1.json``) by category, the level they hold the zone at for the report
hold time (15 min); severity 4-5 raises some by one level:

| category                 | level              | notes                                        |
|--------------------------|--------------------|----------------------------------------------|
| crush, fire              | critical           | at once, whatever the sensors say            |
| violence                 | high (4-5: critical) |                                            |
| injury, medical          | elevated (4-5: high) |                                            |
| overcrowding             | corroborates       | no on-delay for 10 min, confidence +0.1 each; |
|                          |                    | a zone without sensors: 3 reports in 10 min  |
|                          |                    | raise elevated, 5 raise high                 |
| lost_person, other       | none               | kept as evidence                             |
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas import Report, Thresholds, Zone, format_ts

from .alarm import AlarmConfig, Transition, ZoneAlarm, eta_critical_s
from .engine import DensityUpdate
from .hotspot import HotspotWatch
from .indicators_flow import INDICATOR_REASONS, FlowIndicators, LineFlows, indicator_evidence
from .levels import Level, level_for, resolve_thresholds
from .messages import alert_message
from .spillover import Spill, SpillConfig, SpillWatch

BEYOND_DENSITY_REASONS: frozenset[str] = frozenset({*INDICATOR_REASONS, "hotspot", "spillover"})
"""Alert reasons of the indicators beyond the zone's mean density (README "Indicators beyond
density"): counted by ``safetour_indicator_alerts_total``."""

REPORT_LEVELS: dict[str, tuple[Level, Level]] = {  # category -> (level, level at severity 4-5)
    "crush": (Level.CRITICAL, Level.CRITICAL),
    "fire": (Level.CRITICAL, Level.CRITICAL),
    "violence": (Level.HIGH, Level.CRITICAL),
    "injury": (Level.ELEVATED, Level.HIGH),
    "medical": (Level.ELEVATED, Level.HIGH),
}
SOURCE_CONFIDENCE = {"occupancy": 0.9, "line_count": 0.7, "device_count": 0.5}
REPORTER_CONFIDENCE = {"police": 0.95, "staff": 0.9, "operator": 0.9, "volunteer": 0.75,
                       "tourist": 0.6, "citizen_app": 0.6}
MAX_EVIDENCE_TEXT = 500


def hot_spot(hot: HotspotWatch | None, reason: str) -> tuple[str, float] | None:
    """The hot cell and its density for a ``hotspot`` alert's message."""
    if hot is None or reason != "hotspot" or hot.cell is None or math.isnan(hot.density):
        return None
    return hot.cell, hot.density


def episode_id(zone_id: str, start_ms: int) -> str:
    """Deterministic alert id: zone and the event time (ms) of the episode's start."""
    digest = hashlib.sha256(f"{zone_id}\x1f{start_ms}".encode()).hexdigest()[:20]
    return f"{zone_id}:{start_ms}:{digest}"


def status_open(status: str) -> bool:
    """The episode goes on after this message (not a resolution)."""
    return status != "resolved"


def report_level(report: Report) -> Level | None:
    levels = REPORT_LEVELS.get(report.category)
    if levels is None:
        return None
    return levels[1] if (report.severity or 0) >= 4 else levels[0]


def point_in_polygon(lat: float, lon: float, polygon: Iterable[tuple[float, float]]) -> bool:
    """Ray casting on (lat, lon) pairs; fine at the scale of a zone."""
    pts = list(polygon)
    inside = False
    j = len(pts) - 1
    for i, (yi, xi) in enumerate(pts):
        yj, xj = pts[j]
        if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def report_zone(report: Report, zones: Mapping[str, Zone]) -> str | None:
    """The zone a report is about: its ``zone_id`` if the registry ``zones`` holds it, else
    the first zone (registry order) whose polygon holds its lat/lon, else None."""
    if report.zone_id is not None:
        return report.zone_id if report.zone_id in zones else None
    if report.lat is None or report.lon is None:
        return None
    for zid, z in zones.items():
        if z.polygon and point_in_polygon(report.lat, report.lon, z.polygon):
            return zid
    return None


@dataclass(slots=True)
class _ZoneAlerts:
    zone: Zone
    alarm: ZoneAlarm
    reports: deque[Report] = field(default_factory=deque)
    last: DensityUpdate | None = None
    clock_ms: int | None = None  # newest window end observed
    hot: HotspotWatch | None = None  # zones with a grid: the densest cell's alarm
    spill: SpillWatch | None = None  # zones with neighbours (streams/spillover.py)
    last_spill: Spill | None = None


class AlertTracker:
    """Turns density updates and reports into alert dicts (alert.v1.json)."""

    def __init__(self, zones: Mapping[str, Zone], config: AlarmConfig | None = None) -> None:
        self.config = config or AlarmConfig()
        self.spill_config = SpillConfig(enabled=self.config.spillover,
                                        on_delay_s=self.config.on_delay_s)
        self._zones: dict[str, _ZoneAlerts] = {}
        # The recent density records of every neighbour zone, driven here or followed from
        # another worker's partition (agents/worker/neighbours.py), in window-end order.
        self._recent: dict[str, deque[DensityUpdate]] = {}
        # Zones with an open episode: the only ones a tick can change (the worker ticks every
        # few seconds and replay every batch, so a tick must not visit 100,000 calm zones).
        self._open: set[str] = set()
        self.set_zones(zones)

    def set_zones(self, zones: Mapping[str, Zone]) -> None:
        new: dict[str, _ZoneAlerts] = {}
        for zid, z in zones.items():
            defaults = self.config.standing if z.crowd == "standing" else self.config.moving
            t = resolve_thresholds(z.crowd, z.thresholds, defaults)
            old = self._zones.get(zid)
            if old is not None:
                old.zone = z
                old.alarm.thresholds = t
                old.alarm.capacity = z.capacity
                new[zid] = old
            else:
                new[zid] = _ZoneAlerts(z, ZoneAlarm(t, self.config, z.capacity))
            za = new[zid]
            if z.grid is None:
                za.hot = None
            elif za.hot is None:
                za.hot = HotspotWatch.new(t, self.config)
            else:
                za.hot.alarm.thresholds = t
            if z.neighbours and self.spill_config.enabled and za.spill is None:
                za.spill = SpillWatch(self.spill_config)
            elif not z.neighbours:
                za.spill = za.last_spill = None
        self._zones = new
        self._neighbour_ids = {n.zone_id for z in zones.values() for n in z.neighbours}
        self._registry = {zid: za.zone for zid, za in new.items()}
        self._order = {zid: i for i, zid in enumerate(new)}  # registry order
        self._open &= set(new)

    def thresholds(self, zone_id: str) -> Thresholds:
        return self._zones[zone_id].alarm.thresholds

    def zone_for(self, report: Report) -> str | None:
        return report_zone(report, self._registry)

    # -- inputs -----------------------------------------------------------------------------
    def observe(self, u: DensityUpdate) -> list[dict[str, Any]]:
        za = self._zones.get(u.zone_id)
        if za is None:
            return []
        za.clock_ms = u.window_end_ms if za.clock_ms is None else max(za.clock_ms,
                                                                      u.window_end_ms)
        if not math.isnan(u.density):
            za.last = u
            if u.zone_id in self._neighbour_ids:
                self._remember(u)
        self._expire(za, u.window_end_ms)
        hot = (Level.NORMAL if za.hot is None
               else za.hot.observe(u.hot_cell, u.hot_density, u.density, u.window_end_ms))
        spill = None
        if za.spill is not None:
            spill = za.last_spill = za.spill.assess(
                za.zone, u, za.alarm.thresholds.critical,
                self._neighbour_records(za.zone, u.window_end_ms))
        trs = za.alarm.observe(u.density, u.trend_per_min, u.window_end_ms, u.occupancy,
                               u.window_end_ms - u.window_start_ms, hot,
                               LineFlows(u.outflow_per_m_s, u.counterflow_per_m_min,
                                         u.counterflow_balance),
                               None if spill is None else spill.eta_s)
        return [self._alert(za, tr, u.window_end_ms, blind=math.isnan(u.density))
                for tr in trs]

    def follows(self, zone_id: str) -> bool:
        """Whether ``zone_id`` neighbours a zone of the registry (its records matter)."""
        return zone_id in self._neighbour_ids

    def neighbour_record(self, u: DensityUpdate) -> bool:
        """A density record of a zone driven elsewhere (another worker's partition), for
        the spill-over of the zones it neighbours; True if kept (a neighbour, and newer)."""
        if u.zone_id not in self._neighbour_ids or math.isnan(u.density):
            return False
        return self._remember(u)

    def _remember(self, u: DensityUpdate) -> bool:
        q = self._recent.setdefault(u.zone_id, deque())
        if q and q[-1].window_end_ms >= u.window_end_ms:
            return False  # seen (its own worker's and the follower's copy), or older
        q.append(u)
        keep = round(self.spill_config.stale_s * 2000)
        while q[0].window_end_ms < u.window_end_ms - keep:
            q.popleft()
        return True

    def _neighbour_records(self, zone: Zone, end_ms: int
                           ) -> dict[str, tuple[DensityUpdate | None, float]]:
        """Each neighbour's newest record that ends before ``end_ms`` (driven here or
        followed; strictly before, so the choice does not hang on whether the neighbour's
        window of the same end was processed first), and its elevated threshold."""
        out: dict[str, tuple[DensityUpdate | None, float]] = {}
        for n in zone.neighbours:
            nz = self._zones.get(n.zone_id)
            if nz is None:
                continue
            rec = next((r for r in reversed(self._recent.get(n.zone_id, ()))
                        if r.window_end_ms < end_ms), None)
            out[n.zone_id] = (rec, nz.alarm.thresholds.elevated)
        return out

    def stale_neighbours(self) -> list[tuple[str, str]]:
        """(zone, neighbour) of the zones with neighbours and a window whose spill-over
        from that neighbour is paused: its newest record (driven here or followed) is
        missing or more than ``stale_s`` (event time) behind the zone's newest window, as
        when the neighbour's worker has died or the follower lags."""
        stale = round(self.spill_config.stale_s * 1000)
        out = []
        for zid, za in self._zones.items():
            if za.spill is None or za.clock_ms is None:
                continue
            for n in za.zone.neighbours:
                q = self._recent.get(n.zone_id)
                if not q or za.clock_ms - q[-1].window_end_ms > stale:
                    out.append((zid, n.zone_id))
        return out

    def inflows(self) -> list[tuple[str, str, float]]:
        """(zone, neighbour, inflow per minute) of the newest windows, for metrics."""
        return [(zid, n, v) for zid, za in self._zones.items() if za.spill is not None
                for n, v in za.spill.last_inflow.items()]

    def zone_clock(self, zone_id: str) -> int | None:
        """The newest window end the zone has seen (event time), if any."""
        za = self._zones.get(zone_id)
        return None if za is None else za.clock_ms

    def tick(self, clock_of: Callable[[str], int | None]) -> list[tuple[str, dict[str, Any]]]:
        """Zones without windows for ``quiet_s`` of their clock (``clock_of(zone_id)``: the
        clock of the partition that drives the zone, else the world's), blind or without
        sensors: report floors expire, blind and critical episodes re-alarm."""
        quiet = round(self.config.quiet_s * 1000)
        out: list[tuple[str, dict[str, Any]]] = []
        for zid in sorted(self._open, key=self._order.__getitem__):
            za = self._zones[zid]
            a = za.alarm
            now_ms = clock_of(zid)
            if now_ms is None or (za.clock_ms is not None and now_ms - za.clock_ms < quiet):
                continue
            for tr in a.tick(now_ms):
                self._expire(za, now_ms)
                out.append((zid, self._alert(za, tr, now_ms, blind=a.blind)))
        return out

    def report(self, report: Report, zone_id: str) -> list[dict[str, Any]]:
        """A report acts at once, when it arrives (the pipeline has dead-lettered those
        stamped in the future or too old to matter)."""
        return self._apply_report(self._zones[zone_id], report)

    def _apply_report(self, za: _ZoneAlerts, report: Report) -> list[dict[str, Any]]:
        self._expire(za, report.ts_ms)
        # Delivery is at least once (a fetch routed or read again after a crash): a report
        # seen before is not a new witness, and its floor is already applied.
        if any(r.report_id == report.report_id for r in za.reports):
            return []
        # Kept in (time, id) order, not arrival order: reports reach the zone through several
        # partitions, interleaved differently after a crash; evidence and expiry must not
        # depend on that.
        i = len(za.reports)
        while i and (za.reports[i - 1].ts_ms, za.reports[i - 1].report_id) > \
                (report.ts_ms, report.report_id):
            i -= 1
        za.reports.insert(i, report)
        trs: list[Transition] = []
        level = report_level(report)
        if level is not None:
            trs += za.alarm.report_floor(level, report.ts_ms)
        elif report.category == "overcrowding":
            za.alarm.corroborate(report.ts_ms)
            if not za.zone.sensors:
                n = sum(1 for r in za.reports if r.category == "overcrowding")
                if n >= 5:
                    trs += za.alarm.report_floor(Level.HIGH, report.ts_ms)
                elif n >= 3:
                    trs += za.alarm.report_floor(Level.ELEVATED, report.ts_ms)
        return [self._alert(za, tr, report.ts_ms) for tr in trs]

    def _expire(self, za: _ZoneAlerts, now_ms: int) -> None:
        horizon = now_ms - round(self.config.corroboration_s * 1000)
        while za.reports and za.reports[0].ts_ms < horizon:
            za.reports.popleft()

    # -- snapshot ---------------------------------------------------------------------------
    def export_state(self, zone_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for zid in zone_ids:
            za = self._zones.get(zid)
            if za is None:
                continue
            a = za.alarm
            out[zid] = {
                "level": int(a.level), "episode_start_ms": a.episode_start_ms,
                "reason": a.reason, "last_sent_ms": a.last_sent_ms,
                "up_since": {str(k): v for k, v in a.up_since.items()},
                "down_since": a.down_since, "forecast_since": a.forecast_since,
                "floor": int(a.floor), "floor_until_ms": a.floor_until_ms,
                "corroborated_until_ms": a.corroborated_until_ms,
                "reports": [r._asdict() for r in za.reports],
                "clock_ms": za.clock_ms,
                "blind": a.blind, "seq": a.seq,
                "forecast_far_since": a.forecast_far_since,
                "trend": [] if a.trend is None else [[t, d] for t, d in a.trend.points],
                "trend_window_ms": 0 if a.trend is None else a.trend.recent_ms,
                "indicators": None if a.flow is None else a.flow.export_state(),
            }
            if za.hot is not None:
                out[zid]["hot"] = za.hot.export()
        return out

    def import_state(self, zone_ids: Iterable[str], state: Mapping[str, Any]) -> None:
        for zid in zone_ids:
            za = self._zones.get(zid)
            s = state.get(zid)
            if za is None or s is None:
                continue
            a = za.alarm
            a.level = Level(s["level"])
            a.episode_start_ms = s["episode_start_ms"]
            a.reason = s["reason"]
            a.last_sent_ms = s["last_sent_ms"]
            a.up_since = {int(k): v for k, v in s["up_since"].items()}
            a.down_since = s["down_since"]
            a.forecast_since = s["forecast_since"]
            a.floor = Level(s["floor"])
            a.floor_until_ms = s["floor_until_ms"]
            a.corroborated_until_ms = s["corroborated_until_ms"]
            za.reports = deque(Report(**r) for r in s["reports"])
            za.clock_ms = s.get("clock_ms")
            a.blind = bool(s.get("blind", False))
            a.seq = int(s.get("seq", 0))
            # Snapshots from before issue 15 have no trend: it builds up again from here.
            a.forecast_far_since = s.get("forecast_far_since")
            points = s.get("trend") or []
            a.trend = None
            if points:
                a.trend = self.config.new_trend(int(s.get("trend_window_ms", 0)))
                a.trend.ts.extend(int(t) for t, _ in points)
                a.trend.values.extend(float(d) for _, d in points)
            if za.hot is not None and s.get("hot"):
                za.hot.restore(s["hot"])
            # Snapshots from before issue 16 have no indicator state: it starts inactive.
            a.flow = None
            if s.get("indicators"):
                a.flow = FlowIndicators(self.config.indicators)
                a.flow.import_state(s["indicators"])
            self._track(zid, a.level)

    # -- output -----------------------------------------------------------------------------
    def _track(self, zone_id: str, level: Level) -> None:
        if level is Level.NORMAL:
            self._open.discard(zone_id)
        else:
            self._open.add(zone_id)

    def _alert(self, za: _ZoneAlerts, tr: Transition, ts_ms: int, *, blind: bool = False
               ) -> dict[str, Any]:
        z = za.zone
        self._track(z.zone_id, tr.level)
        u = None if blind else za.last  # a blind zone has no density to report
        density = u.density if u is not None else math.nan
        trend = u.trend_per_min if u is not None else math.nan
        eta = (None if tr.level is Level.CRITICAL
               else eta_critical_s(density, trend, za.alarm.thresholds.critical))
        eta_range: list[float | None] | None = None
        said_range: tuple[float, float | None] | None = None  # for the text
        if u is not None and tr.level is not Level.CRITICAL and self.config.robust_forecast:
            fc = za.alarm.forecast(u.window_end_ms - u.window_start_ms)
            eta = None if fc is None else fc.eta_s
            if fc is not None:
                eta_range = [round(fc.lo_s, 1), None if fc.hi_s is None else round(fc.hi_s, 1)]
                said_range = (fc.lo_s, fc.hi_s)
        spill = za.last_spill if tr.reason == "spillover" else None
        neighbour = None if spill is None else self._zones.get(spill.neighbour)
        if spill is not None and tr.level is not Level.CRITICAL and status_open(tr.status):
            eta, eta_range, said_range = spill.eta_s, None, None
        # The reports of the corroboration window that ends at the alert's own time: by event
        # time, so a run where reports arrived in another order (through several partitions,
        # or after a crash) lists the same ones.
        horizon = ts_ms - round(self.config.corroboration_s * 1000)
        reports = [r for r in za.reports if horizon <= r.ts_ms <= ts_ms]
        corroborating = sum(1 for r in reports if r.category == "overcrowding")
        if tr.reason == "report" and reports:
            confidence = max(REPORTER_CONFIDENCE.get(r.source, 0.6) for r in reports)
        else:
            confidence = SOURCE_CONFIDENCE.get(u.source or "", 0.5) if u is not None else 0.5
            # The window's own confidence: lower with stale or disagreeing sensors.
            if u is not None and u.confidence == u.confidence:  # NaN: blind, no sensors
                confidence *= u.confidence
        confidence = min(0.99, confidence + 0.1 * corroborating)
        # A level raised on the rising edge's estimate while the published density (the
        # trailing mean) is still below it: the estimate is what the alarm acted on.
        estimate = za.alarm.estimate
        acted_on = (u is not None and tr.reason == "density" and not tr.reminder
                    and tr.status in ("raised", "escalated") and estimate > density
                    and level_for(density, za.alarm.thresholds) < tr.level)
        window_end = u.window_end_ms if u is not None else ts_ms
        window_start = u.window_start_ms if u is not None else ts_ms
        status = tr.status
        alert: dict[str, Any] = {
            "alert_id": episode_id(z.zone_id, tr.episode_start_ms),
            "zone_id": z.zone_id,
            "level": tr.level.wire,
            "previous_level": tr.previous.wire,
            "status": status,
            "reason": tr.reason,
            "seq": tr.seq,
            "density": None if math.isnan(density) else round(density, 4),
            "occupancy": None if u is None or math.isnan(u.occupancy) else round(u.occupancy, 2),
            "trend": None if math.isnan(trend) else round(trend, 4),
            "eta_critical_s": None if eta is None else round(eta, 1),
            "confidence": round(confidence, 2),
            "window_start": format_ts(window_start),
            "window_end": format_ts(window_end),
            "ts": format_ts(ts_ms),
            "episode_start": format_ts(tr.episode_start_ms),
            "evidence": {
                "sensors": [] if u is None else [
                    {"sensor_id": s, "age_s": round(max(a, 0) / 1000, 1)}
                    for s, a in zip(u.sensors, u.sensor_age_ms, strict=True)],
                "stale_sensors": [] if u is None else list(u.stale_sensors),
                "reports": [
                    {"report_id": r.report_id, "category": r.category, "source": r.source,
                     "severity": r.severity, "ts": format_ts(r.ts_ms),
                     "text": (r.text or "")[:MAX_EVIDENCE_TEXT]}
                    for r in reports],
            },
            "message": alert_message(
                name_th=z.name_th, name_en=z.name_en, level=tr.level.wire, status=status,
                reason=tr.reason, density=None if math.isnan(density) else density,
                eta_s=eta, ts_ms=ts_ms,
                report=next((r.category for r in reversed(reports)), None),
                hot=hot_spot(za.hot, tr.reason), eta_range=said_range,
                estimate=estimate if acted_on else None,
                neighbour=None if neighbour is None else (neighbour.zone.name_th,
                                                          neighbour.zone.name_en)),
        }
        if acted_on:
            alert["density_estimate"] = round(estimate, 4)
        if za.hot is not None:
            alert["hot_cell"] = za.hot.cell
            alert["hot_density"] = None if math.isnan(za.hot.density) else round(
                za.hot.density, 4)
        if spill is not None:
            alert["spillover"] = {"neighbour": spill.neighbour,
                                  "inflow_per_min": round(spill.inflow_per_min, 1),
                                  "net_inflow_per_min": round(spill.net_per_min, 1)}
        if eta_range is not None:
            alert["eta_critical_range_s"] = eta_range
        if tr.reason in INDICATOR_REASONS and u is not None:
            alert["flows"] = indicator_evidence(u, za.alarm.flow)
        if tr.reminder:
            alert["reminder"] = True
        return alert
