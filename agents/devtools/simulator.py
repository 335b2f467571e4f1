"""Phitsanulok scenarios: a crowd model with ground truth, read by faulty sensors.

The model, per zone and per second of scenario time:

- **true occupancy** follows the scenario's target (people wanted in the zone at time t):
  arrivals are Poisson with a rate that closes the gap to the target, departures binomial;
  a *bottleneck* zone lets people out at most ``outflow`` per second (the Naresuan Bridge in
  the crush scenario), so occupancy piles up when arrivals exceed it; a *choke* does the same
  with an outflow that changes over time (a door that jams); a zone's *turnover* is the share
  of its people who leave each second on an even day (1 %, unless the scenario sets it); a
  *counter-stream* (people per second each way) walks through the zone in both directions,
  past its line counters, without changing its occupancy; a *link* (:class:`Link`) walks
  people from one zone into its neighbour through a shared line counter: a share of the
  source's departures cross into the receiving zone (and a share of the receiving zone's
  departures cross back), one second later they are arrivals of the other zone, and that
  counter counts exactly them (entries: into the receiving zone, exits: back), while the
  zones' other line counters count the rest of their flow;
- **sensors** read that truth with what real ones do (``docs/domain.md`` section 2):
  cameras count the people in their view with ±5 % noise and a fixed coverage error per
  camera; line counters report true entries/exits since their previous reading, with a
  small undercount; Wi-Fi counters see people / calibration, with a calibration drift that
  grows over the night; each reading leaves through its zone's gateway, which batches a few
  seconds of readings into one message, with network jitter (out-of-order delivery), 2 %
  duplicates, 0.5 % held back beyond the grace (late), one camera that falls silent midway
  and one sensor whose clock runs 8 s fast;
- **human reports** from tourists and staff, in Thai and English, more often as density
  rises: ``overcrowding`` above 3 p/m², ``crush`` above 6.5 p/m² on the bottleneck;
- **ground truth**: the true density per zone every 5 s, and for each level the episodes
  when the truth was at or above it (start, end, peak), to score detection; and the episodes
  of each indicator beyond density (``streams/indicators_flow.py``) computed on the true
  counts (``indicator_truth``). Every line counter of a zone counts the zone's whole flow,
  less the people who cross a link's counter (which counts only them); the truth lists each
  link's true crossings (``links``).

Everything comes from one seeded ``random.Random``: the same scenario and seed give the same
bytes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from schemas import Kind, Zone
from streams.levels import Level, level_for, resolve_thresholds
from streams.messages import BANGKOK

from .grid_sim import Pocket, grid_sims
from .indicator_truth import indicator_truth
from .links import Link, LinkSims, resolve_links

if TYPE_CHECKING:
    from ..kafka import KafkaTarget

Target = Callable[[float], float]  # seconds since start -> target density, p/m²


def plateau(base: float, peak: float, rise_at: float, rise_s: float, hold_s: float,
            fall_s: float) -> Target:
    """``base``, then a linear rise to ``peak``, a hold, and a linear fall back."""
    def f(t: float) -> float:
        x = t - rise_at
        if x <= 0:
            return base
        if x < rise_s:
            return base + (peak - base) * x / rise_s
        x -= rise_s
        if x < hold_s:
            return peak
        x -= hold_s
        return max(base, peak - (peak - base) * x / fall_s) if fall_s > 0 else base
    return f


def surge(base: float, peak: float, rise_at: float, rise_s: float, hold_s: float,
          fall_s: float) -> Target:
    """Like :func:`plateau`, but the rise accelerates (quadratic): a zone that a filling
    neighbour spills into, the push growing as the neighbour fills."""
    line = plateau(base, peak, rise_at, rise_s, hold_s, fall_s)

    def f(t: float) -> float:
        x = t - rise_at
        if 0 < x < rise_s:
            return base + (peak - base) * (x / rise_s) ** 2
        return line(t)
    return f


def evening(base: float, amplitude: float, period_s: float) -> Target:
    """A gentle daily rhythm: a slow swell around ``base``."""
    return lambda t: max(0.05, base + amplitude * math.sin(2 * math.pi * t / period_s))


def _two_phase(base: float, mid: float, fill_s: float, rise_at: float, peak: float,
               rise_s: float, hold_s: float) -> Target:
    """A slow fill from ``base`` to ``mid`` over ``fill_s``, then from ``rise_at`` a rise to
    ``peak`` over ``rise_s``, a hold, and back to ``mid`` as fast as it rose."""
    first = plateau(base, mid, 0, fill_s, 1e9, 0)
    second = plateau(mid, peak, rise_at, rise_s, hold_s, rise_s)
    return lambda t: first(t) if t < rise_at else second(t)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    start: datetime  # Bangkok local time of t = 0
    duration_s: int
    targets: dict[str, Target]  # zone -> target density
    bottleneck: dict[str, float] = field(default_factory=dict)  # zone -> outflow, people/s
    pockets: dict[str, Pocket] = field(default_factory=dict)  # zone -> a dense grid cell
    choke: dict[str, Target] = field(default_factory=dict)  # zone -> outflow cap, people/s
    turnover: dict[str, float] = field(default_factory=dict)  # zone -> share leaving per s
    counter: dict[str, Target] = field(default_factory=dict)  # zone -> people/s each way
    links: tuple[Link, ...] = ()  # crossings between adjacent zones (links.py)
    # Ground truth of spill-overs: (receiving zone, neighbour, t of the spill's start, s).
    spills: tuple[tuple[str, str, float], ...] = ()


def _bkk(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BANGKOK)


SCENARIOS: dict[str, Scenario] = {
    "ordinary-evening": Scenario(
        "ordinary-evening", "An ordinary Saturday evening", _bkk(2026, 3, 7, 18), 3600,
        {"walking-street": evening(0.6, 0.3, 3600), "night-bazaar": evening(0.5, 0.2, 2400),
         "wat-yai-grounds": evening(0.2, 0.1, 3600), "station-forecourt": evening(0.8, 0.3, 1800),
         "suan-chom-nan": evening(0.4, 0.2, 3000)}),
    "wat-yai-fair": Scenario(
        "wat-yai-fair", "Wat Yai fair, February night", _bkk(2026, 2, 15, 18), 3600,
        {"wat-yai-vihara": plateau(1.5, 4.2, 600, 900, 900, 900),
         "wat-yai-grounds": plateau(0.4, 1.3, 300, 1200, 1200, 600),
         "naresuan-bridge": plateau(0.5, 1.6, 400, 900, 900, 900)}),
    "loy-krathong": Scenario(
        "loy-krathong", "Loy Krathong night at the river", _bkk(2026, 11, 24, 19), 3600,
        {"suan-chom-nan": plateau(1.0, 4.6, 300, 1200, 900, 900),
         "naresuan-bridge": plateau(0.6, 2.4, 600, 900, 600, 900),
         "wat-yai-vihara": plateau(1.0, 3.0, 900, 600, 600, 900)}),
    "songkran": Scenario(
        "songkran", "Songkran afternoon on the water street", _bkk(2026, 4, 13, 15), 3600,
        {"songkran-street": plateau(0.5, 2.6, 300, 1200, 1200, 600),
         "station-forecourt": plateau(1.0, 4.4, 600, 900, 600, 900)}),
    "crush": Scenario(
        "crush", "A crush developing on Naresuan Bridge", _bkk(2026, 2, 16, 20), 1500,
        {"naresuan-bridge": plateau(0.8, 9.0, 120, 600, 300, 300),
         "wat-yai-vihara": plateau(1.5, 2.8, 120, 600, 300, 300),
         "wat-yai-grounds": evening(0.3, 0.05, 1500),
         "station-forecourt": evening(0.7, 0.2, 1500)},
        bottleneck={"naresuan-bridge": 40.0}),
    # A dense pocket in the fair grounds (one 50 m cell near the vihara's door) while the
    # grounds' mean stays low; the grounds fill later (the density alarm's own episode).
    "wat-yai-hotspot": Scenario(
        "wat-yai-hotspot", "Hot spot in the Wat Yai fair grounds", _bkk(2026, 2, 14, 19), 3600,
        {"wat-yai-grounds": plateau(0.35, 1.4, 1200, 900, 600, 600),
         "naresuan-bridge": evening(0.5, 0.1, 3600)},
        pockets={"wat-yai-grounds": Pocket(3, 2, plateau(0.35, 3.0, 300, 600, 1500, 600))}),
    # Issue 16: the station forecourt fills at Itaewon's pace near the end (+1 p/m² per 4
    # minutes), from a density below every level, towards a crush.
    "rapid-fill": Scenario(
        "rapid-fill", "The station forecourt fills fast after the last train",
        _bkk(2026, 4, 12, 22), 2400,
        {"station-forecourt": plateau(0.8, 5.8, 300, 1200, 300, 600),
         "songkran-street": evening(0.4, 0.1, 2400)}),
    # Issue 16: the vihara's door jams while visitors keep arriving (the outflow falls from
    # about 1.1 to 0.4 persons per metre per second over two minutes).
    "vihara-door": Scenario(
        "vihara-door", "A flow breakdown at the Wat Yai vihara door", _bkk(2026, 2, 15, 19),
        2400, {"wat-yai-vihara": plateau(1.2, 1.4, 300, 1200, 600, 300),
               "wat-yai-grounds": evening(0.4, 0.05, 2400)},
        choke={"wat-yai-vihara": lambda t: math.inf if t < 600 else max(1.6, 8.0 - (t - 600)
                                                                         / 20)
               if t < 1800 else math.inf},
        turnover={"wat-yai-vihara": 0.006}),
    # Issue 16: a procession walks up the walking street while the market crowd walks down;
    # the two streams meet at the north counter and the street slowly fills.
    # The street opens empty at 17:00 and fills as a market (people stay about half an hour);
    # from 17:20 a procession walks up it, 3 people a second, against the market crowd.
    "counter-flow": Scenario(
        "counter-flow", "Two streams meet on the walking street", _bkk(2026, 3, 14, 17),
        3600, {"walking-street": _two_phase(0.05, 0.6, 1200, 1500, 1.5, 900, 600),
               "night-bazaar": evening(0.5, 0.2, 3600)},
        turnover={"walking-street": 0.0005},
        counter={"walking-street": plateau(0.0, 3.0, 1200, 300, 1500, 300)}),
    # The fair opens: the grounds fill from their north gate and over Naresuan Bridge, which
    # fills with visitors from the Wang Chan Rd parking and spills towards the temple through
    # the grounds' south gate (a link: wy-gate-south counts exactly those crossings); then the
    # grounds' crowd presses into the vihara through its door, faster and faster
    # (docs/domain.md sections 5 and 6). The bridge alone cannot fill the 40,000 m² grounds:
    # at its peak about 16 persons a second cross into them, +0.024 p/m² a minute, a third
    # of their fill (+0.07); the rest comes in by the north gate. The grounds open nearly
    # empty, so their line counters (which know only what crossed since the start) read true.
    "spillover": Scenario(
        "spillover", "Fair night: the bridge spills into the grounds, the grounds into the "
        "vihara", _bkk(2026, 2, 17, 18, 30), 2700,
        {"naresuan-bridge": plateau(0.6, 1.9, 120, 600, 900, 600),
         "wat-yai-grounds": plateau(0.02, 1.4, 120, 1200, 900, 1200),
         "wat-yai-vihara": surge(1.2, 5.6, 900, 720, 300, 600),
         "station-forecourt": evening(0.7, 0.2, 2700)},
        turnover={"wat-yai-grounds": 0.0005},  # fair visitors stay about half an hour
        links=(Link("naresuan-bridge", "wat-yai-grounds", "wy-gate-south",
                    plateau(0.3, 0.6, 120, 600, 900, 600), lambda t: 0.3),),
        spills=(("wat-yai-grounds", "naresuan-bridge", 120.0),
                ("wat-yai-vihara", "wat-yai-grounds", 900.0))),
}

REPORT_TEXT = {
    ("overcrowding", "th"): ["คนแน่นมาก เดินแทบไม่ได้", "คนเยอะเกินไป ควรส่งเจ้าหน้าที่มาช่วย"],
    ("overcrowding", "en"): ["Very crowded, hard to move", "Too many people here"],
    ("crush", "th"): ["คนเบียดอัดกันจนหายใจไม่ออก มีคนล้ม", "ผลักกันแรงมาก ช่วยด่วน"],
    ("crush", "en"): ["People are being crushed, someone fell", "Pushing, cannot breathe"],
}


@dataclass
class _SensorSim:
    zone: Zone
    sensor_id: str
    kind: Kind
    interval_s: int
    phase_s: int
    coverage_true: float = 0.0  # cameras: the area actually seen
    calibration: float = 1.0
    silent_after_s: float | None = None
    skew_ms: int = 0
    seq: int = 0
    entries_acc: int = 0
    exits_acc: int = 0


@dataclass
class SimOutput:
    """What a run produced: deliveries in delivery order, and the ground truth."""

    events: list[tuple[int, bytes, bytes]]  # (delivery ms, key, message value)
    reports: list[tuple[int, bytes, bytes]]
    truth: dict[str, Any]


def simulate(scenario: Scenario, zones: list[Zone], *, seed: int = 1,
             grace_s: float = 10.0) -> SimOutput:
    rng = random.Random(seed)
    by_id = {z.zone_id: z for z in zones}
    active = [by_id[z] for z in scenario.targets if z in by_id]
    t0_ms = int(scenario.start.timestamp() * 1000)
    sensors: list[_SensorSim] = []
    cameras = []
    grids = grid_sims(active, scenario.pockets, seed)  # their own random streams
    for z in active:
        for spec in z.sensors:
            if spec.kind is Kind.GRID_COUNT:
                continue
            interval = {Kind.OCCUPANCY: 5, Kind.LINE_COUNT: 10, Kind.DEVICE_COUNT: 30}[spec.kind]
            sim = _SensorSim(z, spec.sensor_id, spec.kind, interval, rng.randrange(interval),
                             calibration=spec.calibration or 1.0)
            if spec.kind is Kind.OCCUPANCY:
                cov = spec.coverage_m2 or z.area_m2
                sim.coverage_true = min(z.area_m2, cov * rng.uniform(0.92, 1.08))
                cameras.append(sim)
            sensors.append(sim)
    # Faults that single out one sensor: a camera that dies midway (on a zone with more
    # than one camera, so the zone is not blind), one sensor with a fast clock.
    multi = [c for c in cameras if sum(o.zone is c.zone for o in cameras) > 1]
    if multi:
        rng.choice(multi).silent_after_s = scenario.duration_s * 0.5
    if sensors:
        rng.choice(sensors).skew_ms = 8000
    occ = {z.zone_id: scenario.targets[z.zone_id](0) * z.area_m2 for z in active}
    truth_series: dict[str, list[tuple[int, float]]] = {z.zone_id: [] for z in active}
    # True flows per 5 s, summed over the zone's counters' view: (entries, exits).
    flows: dict[str, list[tuple[int, int]]] = {z.zone_id: [] for z in active}
    acc_flow = {z.zone_id: [0, 0] for z in active}
    links = LinkSims(resolve_links(scenario.links, active, sensors), rng, _binomial)
    link_counters = links.counters
    events: list[tuple[int, bytes, bytes]] = []
    reports: list[tuple[int, bytes, bytes]] = []
    pending: dict[str, list[dict[str, Any]]] = {z.zone_id: [] for z in active}
    report_seq = 0
    left: dict[str, int] = {}  # per zone, this second's departures not yet over a link
    moves: dict[str, tuple[int, int]] = {}  # per zone, this second's (arrivals, departures)
    for t in range(scenario.duration_s + 1):
        now_ms = t0_ms + t * 1000
        for z in active:
            zid = z.zone_id
            base = scenario.targets[zid](t)
            target = base * z.area_m2 + sum(g.extra(t, base) for g in grids if g.zone is z)
            cur = occ[zid]
            # Fewer get in as it fills: nobody enters a zone packed at ~11 p/m².
            room = max(0.0, 1.0 - cur / z.area_m2 / 11.0)
            turn = scenario.turnover.get(zid, 0.01)
            arrivals = _poisson(rng, (max(0.0, target - cur) * 0.08 + target * turn) * room)
            leave_p = min(1.0, turn + max(0.0, cur - target) * 0.08 / max(cur, 1.0))
            departures = _binomial(rng, int(cur), leave_p)
            cap = scenario.bottleneck.get(zid)
            if cap is not None:
                departures = min(departures, _poisson(rng, cap))
            choke = scenario.choke.get(zid)
            if choke is not None and math.isfinite(limit := choke(t)):
                departures = min(departures, _poisson(rng, limit))
            # Those who crossed a link into the zone last second are among its arrivals.
            arrivals = max(arrivals, links.arriving.get(zid, 0))
            occ[zid] = max(0.0, cur + arrivals - departures)
            left[zid] = departures
            counter = scenario.counter.get(zid)
            if counter is not None:  # walks through both ways: counted, occupancy unchanged
                passing = _poisson(rng, counter(t))
                arrivals += passing
                departures += passing
            moves[zid] = (arrivals, departures)
            density = occ[zid] / z.area_m2
            # Human reports, Poisson in the density over the level where people notice.
            if density > 3.0 and rng.random() < (density - 3.0) * 0.004:
                report_seq += 1
                reports.append(_report(rng, report_seq, z, "overcrowding", now_ms))
            if cap is not None and density > 6.5 and rng.random() < 0.01:
                report_seq += 1
                reports.append(_report(rng, report_seq, z, "crush", now_ms))
        # Link crossings: shares of this second's departures, arrivals of the other zone in
        # the next; the link's counter counts them, the zones' other counters the rest.
        via_in, via_out = links.step(t, now_ms, left)
        for z in active:
            zid = z.zone_id
            arrivals, departures = moves[zid]
            acc = acc_flow[zid]
            acc[0] += arrivals
            acc[1] += departures
            rest_in = arrivals - via_in.get(zid, 0)
            rest_out = departures - via_out.get(zid, 0)
            for s in sensors:
                if (s.zone is z and s.kind is Kind.LINE_COUNT
                        and s.sensor_id not in link_counters):
                    s.entries_acc += rest_in
                    s.exits_acc += rest_out
            if t % 5 == 0:
                truth_series[zid].append((now_ms, occ[zid] / z.area_m2))
                flows[zid].append((acc[0], acc[1]))
                acc[0] = acc[1] = 0
        for s in sensors:
            if (t - s.phase_s) % s.interval_s or t < s.phase_s:
                continue
            if s.silent_after_s is not None and t > s.silent_after_s:
                continue
            z = s.zone
            s.seq += 1
            ev: dict[str, Any] = {"event_id": f"{s.sensor_id}-{s.seq}", "sensor_id": s.sensor_id,
                                  "zone_id": z.zone_id, "kind": s.kind.wire,
                                  "ts": now_ms + s.skew_ms}
            true_occ = occ[z.zone_id]
            if s.kind is Kind.OCCUPANCY:
                seen = true_occ * s.coverage_true / z.area_m2
                ev["count"] = max(0, round(seen * rng.gauss(1.0, 0.05)))
            elif s.kind is Kind.LINE_COUNT:
                ev["entries"] = max(0, round(s.entries_acc * rng.uniform(0.96, 1.0)))
                ev["exits"] = max(0, round(s.exits_acc * rng.uniform(0.96, 1.0)))
                s.entries_acc = s.exits_acc = 0
            else:
                drift = 1.0 + 0.1 * t / max(scenario.duration_s, 1)
                ev["devices"] = max(0, round(true_occ / s.calibration * drift
                                             * rng.gauss(1.0, 0.08)))
            pending[z.zone_id].append(ev)
        for g in grids:
            g.step(t, now_ms, occ[g.zone.zone_id])
        if t % 3 == 0:  # gateways flush every 3 s
            for g in grids:
                events.extend(g.flush(now_ms, grace_s))
            for zid, batch in pending.items():
                if batch:
                    events.extend(_deliver(rng, now_ms, zid, batch, grace_s))
                    pending[zid] = []
    events.sort(key=lambda d: d[0])
    reports.sort(key=lambda d: d[0])
    truth = _truth(scenario, active, truth_series)
    truth["links"] = links.truth()
    for g in grids:
        truth["zones"][g.zone.zone_id]["hot"] = g.truth()
    for z in active:
        truth["zones"][z.zone_id]["indicators"] = indicator_truth(
            z, truth_series[z.zone_id], flows[z.zone_id])
    return SimOutput(events, reports, truth)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 0 or p <= 0:
        return 0
    if n > 60:
        mean = n * p
        return min(n, max(0, round(rng.gauss(mean, math.sqrt(max(mean * (1 - p), 1e-9))))))
    return sum(1 for _ in range(n) if rng.random() < p)


def _deliver(rng: random.Random, now_ms: int, zone_id: str, batch: list[dict[str, Any]],
             grace_s: float) -> Iterator[tuple[int, bytes, bytes]]:
    key = zone_id.encode()
    late = [e for e in batch if rng.random() < 0.005]
    ontime = [e for e in batch if e not in late]
    if ontime:
        yield now_ms + rng.randint(0, 3000), key, orjson.dumps(ontime)
        for e in ontime:
            if rng.random() < 0.02:  # the gateway re-sends a reading
                yield now_ms + rng.randint(500, 6000), key, orjson.dumps([e])
    for e in late:  # held back past the grace: these must come out as late
        yield now_ms + int((grace_s + rng.uniform(20, 40)) * 1000), key, orjson.dumps([e])


def _report(rng: random.Random, seq: int, z: Zone, category: str,
            now_ms: int) -> tuple[int, bytes, bytes]:
    lang = rng.choice(["th", "th", "en"])
    source = rng.choice(["tourist", "tourist", "citizen_app", "staff", "volunteer"])
    doc: dict[str, Any] = {
        "report_id": f"r{seq}", "ts": now_ms, "category": category, "source": source,
        "lang": lang, "text": rng.choice(REPORT_TEXT[(category, lang)]),
        "severity": 5 if category == "crush" else rng.randint(2, 4),
    }
    if z.polygon and rng.random() < 0.5:  # half locate themselves by GPS
        lats = [p[0] for p in z.polygon]
        lons = [p[1] for p in z.polygon]
        doc["lat"] = round(sum(lats) / len(lats), 6)
        doc["lon"] = round(sum(lons) / len(lons), 6)
    else:
        doc["zone_id"] = z.zone_id
    return now_ms + rng.randint(1000, 20000), doc["report_id"].encode(), orjson.dumps(doc)


def _truth(scenario: Scenario, zones: list[Zone],
           series: dict[str, list[tuple[int, float]]]) -> dict[str, Any]:
    t0_ms = int(scenario.start.timestamp() * 1000)
    out: dict[str, Any] = {"scenario": scenario.name, "title": scenario.title,
                           "start": scenario.start.isoformat(), "zones": {},
                           "spills": [{"zone_id": z, "neighbour": n,
                                       "start_ms": t0_ms + round(t * 1000)}
                                      for z, n, t in scenario.spills]}
    for z in zones:
        t = resolve_thresholds(z.crowd, z.thresholds)
        pts = series[z.zone_id]
        episodes: dict[str, list[dict[str, Any]]] = {}
        for lv in (Level.ELEVATED, Level.HIGH, Level.CRITICAL):
            eps: list[dict[str, Any]] = []
            cur: dict[str, Any] | None = None
            for ts, d in pts:
                if level_for(d, t) >= lv:
                    if cur is None:
                        cur = {"start_ms": ts, "end_ms": ts, "peak": d}
                        eps.append(cur)
                    cur["end_ms"] = ts
                    cur["peak"] = round(max(cur["peak"], d), 3)
                else:
                    cur = None
            episodes[lv.wire] = eps
        out["zones"][z.zone_id] = {
            "area_m2": z.area_m2, "crowd": z.crowd, "capacity": z.capacity,
            "thresholds": {"elevated": t.elevated, "high": t.high, "critical": t.critical},
            "peak": round(max((d for _, d in pts), default=0.0), 3),
            "episodes": episodes,
            "series": [[ts, round(d, 4)] for ts, d in pts],
        }
    return out


def write_files(out: SimOutput, events_path: str, reports_path: str) -> None:
    """JSONL files for ``safetour replay``: one message value a line, in delivery order."""
    with open(events_path, "wb") as f:
        for _, _, value in out.events:
            f.write(value + b"\n")
    with open(reports_path, "wb") as f:
        for _, _, value in out.reports:
            f.write(value + b"\n")


async def publish_live(
    out: SimOutput, kafka: KafkaTarget, sensor_topic: str, reports_topic: str, *,
    speed: float, progress: Callable[[int, float, int], None] | None = None,
    stop: Any = None,
) -> int:
    """Publish the deliveries to Kafka, ``speed`` times faster than scenario time (0: as
    fast as possible). ``progress(sent, rate, scenario_ms)`` is called about once a second.
    ``stop`` (an asyncio.Event): once set, nothing more is sent; what was sent is flushed."""
    import asyncio  # noqa: PLC0415
    import contextlib  # noqa: PLC0415
    import time  # noqa: PLC0415

    from ..kafka import as_config  # noqa: PLC0415

    merged = sorted([(t, sensor_topic, k, v) for t, k, v in out.events]
                    + [(t, reports_topic, k, v) for t, k, v in out.reports],
                    key=lambda d: d[0])
    if not merged:
        return 0
    cfg = as_config(kafka)
    producer = cfg.producer(linger_ms=10)
    await cfg.start(producer)
    sent = 0
    wall0 = time.monotonic()
    sim0 = merged[0][0]
    last_report = wall0
    try:
        for when, topic, key, value in merged:
            if stop is not None and stop.is_set():
                break
            if speed > 0:
                delay = wall0 + (when - sim0) / 1000 / speed - time.monotonic()
                if delay > 0:
                    await producer.flush()
                    if stop is None:
                        await asyncio.sleep(delay)
                    else:  # a stop (SIGTERM, SIGINT) ends the wait at once
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), delay)
                        if stop.is_set():
                            break
            await producer.send(topic, value, key=key)
            sent += 1
            now = time.monotonic()
            if progress is not None and now - last_report >= 1.0:
                progress(sent, sent / (now - wall0), when)
                last_report = now
        await producer.flush()
    finally:
        await producer.stop()
    if progress is not None:
        progress(sent, sent / max(time.monotonic() - wall0, 1e-9), merged[-1][0])
    return sent
