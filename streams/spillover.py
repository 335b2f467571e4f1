"""Spill-over between adjacent zones: a forecast for a zone whose neighbour is filling and
whose inflow from that neighbour is rising, before its own density moves.

The zone graph is the registry's ``neighbours`` (zone.v1.json): per zone, the adjacent zones
and the line counters on the shared boundary, with the count (``entries`` or ``exits``) that
means "from the neighbour into this zone". ``docs/domain.md`` section 6 ("Forecast
horizons"): minutes of lead time come from neighbouring areas filling, not from the zone
alone.

The rule, per density window of a zone Z with neighbours (:meth:`SpillWatch.assess`):

1. **the neighbour N is filling**: N's newest record is at most ``stale_s`` (event time)
   away from Z's window, and N's density is at least ``fill_from`` of N's elevated threshold
   and rising (its trend at least ``min_trend_per_min``);
2. **the inflow from N is rising**: the inflow over the boundary counters (persons per
   minute over the window) is at least ``min_inflow_per_min``, and the Theil-Sen slope of
   the net flow from N (in less back) over its last ``inflow_span_s`` is significantly
   positive (its lower 90 % bound above 0): a busy gate's gross count rises with turnover;
3. **the ETA**: Z's net inflow (entries - exits of Z's own line counters, plus the
   neighbour-owned boundary counters' flow into Z less their flow out), rising as the
   net flow from N rises (the lower bound of its slope: a spill-over that goes on), against
   the room left before critical (critical density x area - occupancy): the ``t`` with
   ``net t + rise t² / 2 = room`` (:func:`eta_from_inflow`).

The rule has hysteresis, like the flow indicators' ``Hold`` (``streams/indicators_flow.py``),
so that one spill is one episode: conditions 1 and 2 *raise* a spill-over from N, and
once they have held for ``on_delay_s`` (the alarm's on-delay: ``streams/alerts.py`` passes
it; before that the ETA is given only while they hold, so a blip stays a blip) it is
*kept* while N's record is fresh, N's density stays at least ``keep_fill_from`` of its
elevated threshold and does not fall (trend at least ``keep_trend_per_min``, 0: a full
neighbour at a plateau still spills), and the inflow from N at least
``keep_inflow_per_min``; it ends once that keep condition has failed for ``off_delay_s``
(event time). The ETA is computed (as in 3) only in windows where the raise condition
holds; while held, in the other windows, the last ETA stands (so the weaker keep condition
never makes a forecast of its own). Without it, a neighbour whose trend hovers about
``min_trend_per_min`` (filling for 20 s, not for 40 s) gave a new episode each minute.

The alarm (``streams/alarm.py``) treats that ETA like its own forecast's: held for the
on-delay within the horizon it raises ``elevated`` (or the current level) with
``reason: spillover``, and the same forecast hold keeps it until the ETA has stayed beyond
the horizon plus margin for the off-delay. A spill-over never raises above elevated by itself:
higher levels come from the zone's own density.

Per-counter flows (:class:`LineFlows`) are kept here, not in the numba engine: only the line
counters of zones in the graph are followed, deduplicated by event id, in the density
windows' own bounds. Pure: no I/O, no faust, no aiokafka.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas import Kind, SensorEvent, Zone, parse_ts

from .engine import DensityUpdate
from .indicators_flow import Hold
from .slope_kernels import theil_sen

LineFlow = tuple[str, float, float]
"""(sensor_id, entries per minute, exits per minute) of a line counter over a window."""


@dataclass(frozen=True, slots=True)
class SpillConfig:
    enabled: bool = True
    stale_s: float = 30.0  # a neighbour record further than this (event time) is ignored
    fill_from: float = 0.8  # neighbour density at least this x its elevated threshold ...
    min_trend_per_min: float = 0.02  # ... and rising at least this, p/m² per minute
    min_inflow_per_min: float = 10.0  # persons per minute over the boundary
    inflow_span_s: float = 120.0  # history for the inflow's rising test
    min_points: int = 6
    keep_fill_from: float = 0.6  # kept while the neighbour is at least this x elevated ...
    keep_inflow_per_min: float = 5.0  # ... the inflow from it at least this ...
    keep_trend_per_min: float = 0.0  # ... and it not emptying (trend at least this)
    on_delay_s: float = 10.0  # raised this long: held (AlarmConfig.on_delay_s)
    off_delay_s: float = 60.0  # the keep condition failed this long: the spill-over ends

    def __post_init__(self) -> None:
        if min(self.stale_s, self.fill_from, self.inflow_span_s) <= 0 or self.min_points < 3:
            raise ValueError("stale_s, fill_from, inflow_span_s must be > 0, min_points >= 3")
        if (not 0 <= self.keep_fill_from <= self.fill_from
                or not 0 <= self.keep_inflow_per_min <= self.min_inflow_per_min
                or self.keep_trend_per_min > self.min_trend_per_min
                or min(self.on_delay_s, self.off_delay_s) < 0):
            raise ValueError("keep_fill_from / keep_inflow_per_min must be in [0, the raise "
                             "threshold], on_delay_s, off_delay_s >= 0 (hysteresis)")


@dataclass(frozen=True, slots=True)
class Spill:
    """A spill-over forecast: from which neighbour, the ETA to critical (s) from the net
    inflow, the inflow from that neighbour and Z's net inflow (persons per minute)."""

    neighbour: str
    eta_s: float
    inflow_per_min: float
    net_per_min: float


def graph_counters(zones: Iterable[Zone]) -> set[str]:
    """The line counters whose flows the spill-over needs: every line counter of a zone in
    the graph (for its net inflow) and every boundary counter."""
    zs = list(zones)
    in_graph = {z.zone_id for z in zs if z.neighbours}
    in_graph |= {n.zone_id for z in zs for n in z.neighbours}
    out = {c.sensor_id for z in zs for n in z.neighbours for c in n.counters}
    out |= {s.sensor_id for z in zs if z.zone_id in in_graph for s in z.sensors
            if s.kind is Kind.LINE_COUNT}
    return out


@dataclass(slots=True)
class LineFlows:
    """Entries and exits of the followed line counters, per reading (event time), for the
    windows' flows. Deduplicated by event id; kept ``keep_ms`` behind the newest reading."""

    sensors: set[str] = field(default_factory=set)
    keep_ms: int = 180_000
    _readings: dict[str, deque[tuple[int, str, int, int]]] = field(default_factory=dict)
    _ids: dict[str, set[str]] = field(default_factory=dict)

    def add(self, events: Iterable[SensorEvent]) -> None:
        for e in events:
            if e.kind is not Kind.LINE_COUNT or e.sensor_id not in self.sensors:
                continue
            ids = self._ids.setdefault(e.sensor_id, set())
            if e.event_id in ids:
                continue
            ids.add(e.event_id)
            q = self._readings.setdefault(e.sensor_id, deque())
            q.append((e.ts_ms, e.event_id, e.entries, e.exits))
            if len(q) > 1 and q[-2][0] > e.ts_ms:  # out of order: keep the deque sorted
                items = sorted(q)
                q.clear()
                q.extend(items)
            cut = q[-1][0] - self.keep_ms
            while q and q[0][0] < cut:
                ids.discard(q.popleft()[1])

    def window(self, sensors: Iterable[str], start_ms: int, end_ms: int) -> tuple[LineFlow, ...]:
        """Per sensor, entries and exits per minute of the readings in (start, end]."""
        minutes = (end_ms - start_ms) / 60_000
        out = []
        for s in sensors:
            q = self._readings.get(s)
            if not q or minutes <= 0:
                continue
            ins = outs = 0
            for ts, _, a, b in q:
                if start_ms < ts <= end_ms:
                    ins += a
                    outs += b
            out.append((s, float(ins) / minutes, float(outs) / minutes))  # numpy in, JSON out
        return tuple(out)

    def forget(self, sensors: Iterable[str]) -> None:
        for s in sensors:
            self._readings.pop(s, None)
            self._ids.pop(s, None)


def _flows(u: DensityUpdate | None) -> dict[str, tuple[float, float]]:
    return {} if u is None else {s: (a, b) for s, a, b in u.line_flows}


@dataclass(slots=True)
class SpillWatch:
    """The spill-over rule for one zone: its inflow history and hold per neighbour, and
    the spill-over it gave last (which stands while held)."""

    config: SpillConfig = field(default_factory=SpillConfig)
    inflow: dict[str, deque[tuple[int, float]]] = field(default_factory=dict)
    last_inflow: dict[str, float] = field(default_factory=dict)  # per neighbour, per min
    holds: dict[str, Hold] = field(default_factory=dict)  # per neighbour: raised / kept
    held: Spill | None = None

    def assess(self, zone: Zone, u: DensityUpdate, critical: float,
               neighbours: Mapping[str, tuple[DensityUpdate | None, float]]) -> Spill | None:
        """The spill-over forecast for ``zone``'s window ``u`` (None: none), given each
        neighbour's newest record and its elevated threshold."""
        cfg = self.config
        if not cfg.enabled or not zone.neighbours or math.isnan(u.density):
            return None
        own = _flows(u)
        own_ids = {s.sensor_id for s in zone.sensors}
        net = sum(a - b for a, b in own.values())
        stale = round(cfg.stale_s * 1000)
        span = round(cfg.inflow_span_s * 1000)
        on, off = round(cfg.on_delay_s * 1000), round(cfg.off_delay_s * 1000)
        best: tuple[float, str, float] | None = None
        active = False
        for n in zone.neighbours:
            rec, elevated = neighbours.get(n.zone_id, (None, math.nan))
            fresh = rec is not None and abs(rec.window_end_ms - u.window_end_ms) <= stale
            theirs = _flows(rec) if fresh else {}
            inflow = from_n = 0.0
            for c in n.counters:
                flow = own.get(c.sensor_id) if c.sensor_id in own_ids else theirs.get(
                    c.sensor_id)
                if flow is None:
                    continue
                into, back = flow if c.into == "entries" else flow[::-1]
                inflow += into
                from_n += into - back
                if c.sensor_id not in own_ids:
                    net += into - back
            hist = self.inflow.setdefault(n.zone_id, deque())
            if n.counters:
                hist.append((u.window_end_ms, from_n))
                self.last_inflow[n.zone_id] = inflow
            while hist and hist[0][0] < u.window_end_ms - span:
                hist.popleft()
            # No record of the neighbour near this window's time: neither raised nor kept.
            seen = rec is not None and fresh and not math.isnan(rec.density)
            full = seen and rec is not None and rec.density >= cfg.fill_from * elevated
            filling = (full and rec is not None and not math.isnan(rec.trend_per_min)
                       and rec.trend_per_min >= cfg.min_trend_per_min)
            rise = _rise(hist, cfg.min_points) if filling else 0.0
            raise_now = filling and rise > 0 and inflow >= cfg.min_inflow_per_min
            keep = (seen and rec is not None and rec.density >= cfg.keep_fill_from * elevated
                    and not rec.trend_per_min < cfg.keep_trend_per_min
                    and inflow >= cfg.keep_inflow_per_min)
            hold = self.holds.get(n.zone_id)
            if hold is None:
                if not raise_now:
                    continue  # calm neighbours keep no hold
                hold = self.holds[n.zone_id] = Hold()
            if hold.update(u.window_end_ms, raise_now, keep, on, off):
                active = True
            elif hold.since is None:
                del self.holds[n.zone_id]  # neither raised nor held (any more)
            if raise_now:
                cand = (inflow, n.zone_id, rise)
                best = cand if best is None or cand > best else best
        occupancy = u.occupancy if not math.isnan(u.occupancy) else u.density * zone.area_m2
        room = critical * zone.area_m2 - occupancy
        if room <= 0:
            return None  # at critical by its own density: the zone's own levels speak
        now = None if best is None or net <= 0 else Spill(
            best[1], eta_from_inflow(room, net / 60.0, best[2] / 60.0), best[0], net)
        if not active:
            self.held = None
            return now  # not (yet) held: only while the raise condition holds
        if now is not None:
            self.held = now
        return self.held  # kept or in the off-delay: the last ETA stands


def eta_from_inflow(room: float, net_per_s: float, rise_per_s2: float) -> float:
    """Seconds until ``room`` persons have come in at a net inflow of ``net_per_s`` that
    rises by ``rise_per_s2`` each second: the root of ``net t + rise t² / 2 = room``."""
    if rise_per_s2 <= 0:
        return room / net_per_s
    return (math.sqrt(net_per_s * net_per_s + 2 * rise_per_s2 * room) - net_per_s) / rise_per_s2


def _rise(hist: Sequence[tuple[int, float]], min_points: int) -> float:
    """The inflow's rise (persons per minute, per second): the Theil-Sen slope's lower
    90 % bound when significantly positive, else 0."""
    if len(hist) < min_points:
        return 0.0
    fit = theil_sen(hist)
    return fit.lo if fit is not None and fit.lo > 0 else 0.0


def density_from_record(doc: Mapping[str, Any]) -> DensityUpdate | None:
    """A density-topic record (``streams.records.density_record``) back as the fields the
    spill-over reads of a neighbour; None if it is not one."""
    try:
        zid = doc["zone_id"]
        start, end = parse_ts(doc["window_start"]), parse_ts(doc["window_end"])
        if not isinstance(zid, str):
            return None

        def num(k: str) -> float:
            v = doc.get(k)
            return math.nan if v is None else float(v)

        flows = tuple((str(f["sensor_id"]), float(f["entries_per_min"]),
                       float(f["exits_per_min"])) for f in doc.get("line_flows") or ())
        return DensityUpdate(zid, start, end, num("occupancy"), num("density"), (),
                             num("trend_per_min"), line_flows=flows)
    except Exception:  # any malformed record: not a neighbour record
        return None
