"""Spill-over between adjacent zones (streams/spillover.py, the alarm's spill ETA, the zone
graph in the registry): the rule fires only for a filling neighbour with a rising inflow,
the ETA is right, the alarm raises one held episode, and the alert names the neighbour."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from schemas import (
    BoundaryCounter,
    Kind,
    Neighbour,
    SensorEvent,
    SensorSpec,
    Zone,
    ZoneRegistryError,
    load_zones,
    parse_zone,
)
from streams.alarm import AlarmConfig, ZoneAlarm
from streams.alerts import AlertTracker
from streams.cap import to_cap
from streams.engine import DensityUpdate
from streams.levels import STANDING_DEFAULTS, Level
from streams.records import density_record
from streams.registry import (
    RegistryRules,
    check_zone_update,
    check_zones,
    neighbour_warnings,
)
from streams.spillover import (
    LineFlows,
    SpillConfig,
    SpillWatch,
    density_from_record,
    eta_from_inflow,
    graph_counters,
)

REPO = Path(__file__).resolve().parents[2]
T0 = 1_771_330_000_000
W = 60_000


# -- the registry ---------------------------------------------------------------------------
def zone_doc(zid: str, *sensors: tuple[str, str], neighbours: Any = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"zone_id": zid, "name": {"th": "ก", "en": zid}, "area_m2": 600,
                           "crowd": "standing",
                           "sensors": [{"sensor_id": s, "kind": k} for s, k in sensors]}
    if neighbours is not None:
        doc["neighbours"] = neighbours
    return doc


def pair(a_into: str = "entries", b_into: str | None = "exits") -> list[Zone]:
    a = zone_doc("a", ("a-door", "line_count"), ("a-cam", "occupancy"),
                 neighbours=[{"zone_id": "b", "counters": [
                     {"sensor_id": "a-door", "into": a_into}]}])
    b = zone_doc("b", ("b-cam", "occupancy"), neighbours=None if b_into is None else [
        {"zone_id": "a", "counters": [{"sensor_id": "a-door", "into": b_into}]}])
    return [parse_zone(a), parse_zone(b)]


def test_the_demo_graph_loads_is_symmetric_and_names_line_counters() -> None:
    zones = load_zones(REPO / "deploy/zones/phitsanulok.yaml")
    check_zones(zones, RegistryRules())
    assert neighbour_warnings(zones) == []
    by_id = {z.zone_id: z for z in zones}
    vihara = by_id["wat-yai-vihara"]
    assert vihara.neighbours == (Neighbour("wat-yai-grounds",
                                           (BoundaryCounter("wy-vihara-door", "entries"),)),)
    bridge = {n.zone_id for n in by_id["naresuan-bridge"].neighbours}
    assert {"wat-yai-grounds", "walking-street", "suan-chom-nan"} == bridge


def test_old_registries_without_neighbours_still_load() -> None:
    z = parse_zone(zone_doc("a", ("s", "occupancy")))
    assert z.neighbours == ()
    assert "neighbours" not in z.extra


@pytest.mark.parametrize(("zones", "match"), [
    ([zone_doc("a", ("s", "line_count"), neighbours=[{"zone_id": "a"}])],
     "zone 'a': lists itself as a neighbour"),
    ([zone_doc("a", ("s", "line_count"), neighbours=[{"zone_id": "zz"}])],
     "zone 'a': neighbour 'zz' is not a zone of the registry"),
    ([zone_doc("a", ("s", "line_count"), neighbours=[
        {"zone_id": "b", "counters": [{"sensor_id": "nope", "into": "entries"}]}]),
      zone_doc("b", ("t", "line_count"))],
     "counter 'nope' is not a sensor of 'a' or 'b'"),
    ([zone_doc("a", ("s", "occupancy"), neighbours=[
        {"zone_id": "b", "counters": [{"sensor_id": "s", "into": "entries"}]}]),
      zone_doc("b", ("t", "line_count"))],
     "counter 's' is not a line_count sensor"),
    ([zone_doc("a", ("s", "line_count"), neighbours=[{"zone_id": "b"}, {"zone_id": "b"}]),
      zone_doc("b", ("t", "line_count"))],
     "neighbour 'b' is listed twice"),
])
def test_a_broken_zone_graph_is_refused_naming_zone_and_rule(
        zones: list[dict[str, Any]], match: str) -> None:
    with pytest.raises(ZoneRegistryError, match=match):
        check_zones([parse_zone(d) for d in zones], RegistryRules())


def test_a_counter_of_the_neighbour_is_accepted_and_asymmetry_is_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    zones = pair(b_into=None)
    check_zones(zones, RegistryRules())
    assert any("'b' does not list it back" in r.message for r in caplog.records)
    same = pair(b_into="entries")
    assert neighbour_warnings(same) == [
        "zones 'a' and 'b' both read counter 'a-door' entries as flow into themselves"]
    assert neighbour_warnings(pair()) == []


def test_a_live_update_may_name_a_neighbour_that_comes_later_but_not_itself() -> None:
    a = parse_zone(zone_doc("a", ("s", "line_count"), neighbours=[{"zone_id": "later"}]))
    check_zone_update({}, a, RegistryRules())
    bad = parse_zone(zone_doc("a", ("s", "line_count"), neighbours=[{"zone_id": "a"}]))
    with pytest.raises(ZoneRegistryError, match="lists itself"):
        check_zone_update({}, bad, RegistryRules())


def _neighbour_mutations(rng: random.Random) -> Any:
    good: dict[str, Any] = {"zone_id": "b", "counters": [{"sensor_id": "s", "into": "entries"}]}
    choice = rng.randrange(12)
    n: Any = orjson.loads(orjson.dumps(good))
    if choice == 0:
        return [n]
    if choice == 1:
        n["counters"][0]["into"] = rng.choice(["in", "", None, 1, "Exits"])
    elif choice == 2:
        del n["counters"][0][rng.choice(["sensor_id", "into"])]
    elif choice == 3:
        n["counters"][0]["sensor_id"] = rng.choice(["", "x" * 129, 5, None, "x" * 128])
    elif choice == 4:
        n["zone_id"] = rng.choice(["", "z" * 65, 3, None, "z" * 64])
    elif choice == 5:
        n["extra"] = 1
    elif choice == 6:
        n["counters"][0]["extra"] = 1
    elif choice == 7:
        n["counters"] = rng.choice(["s", None, {}, [None], []])
    elif choice == 8:
        return rng.choice([{}, "b", None, 3, [n] * rng.choice([32, 33])])
    elif choice == 9:
        del n["counters"]
    elif choice == 10:
        n["counters"] = [n["counters"][0]] * rng.choice([32, 33])
    else:
        return [rng.choice([n, "b", None, []])]
    return [n]


def test_neighbours_parse_exactly_as_zone_v1_json_says() -> None:
    schema = orjson.loads((REPO / "schemas/json/zone.v1.json").read_bytes())
    ref = jsonschema.Draft202012Validator(schema)
    rng = random.Random(16)
    seen = {True: 0, False: 0}
    for _ in range(600):
        doc = zone_doc("a", ("s", "line_count"))
        doc["neighbours"] = _neighbour_mutations(rng)
        try:
            parse_zone(doc)
            ours = True
        except ZoneRegistryError:
            ours = False
        assert ours == ref.is_valid(doc), doc["neighbours"]
        seen[ours] += 1
    assert min(seen.values()) > 50


# -- line flows -----------------------------------------------------------------------------
def line(eid: str, ts: int, entries: int, exits: int = 0, sensor: str = "a-door") -> SensorEvent:
    return SensorEvent(eid, sensor, "a", Kind.LINE_COUNT, ts, entries=entries, exits=exits)


def test_line_flows_count_each_reading_once_in_the_window_bounds_in_any_order() -> None:
    flows = LineFlows({"a-door"})
    evs = [line(f"e{i}", T0 + i * 10_000, 10 * i, i) for i in range(1, 10)]
    shuffled = evs[:]
    random.Random(3).shuffle(shuffled)
    flows.add(shuffled + evs[:4])  # re-sent readings (the gateway's duplicates)
    flows.add([line("other", T0, 999, sensor="elsewhere")])
    start, end = T0 + 20_000, T0 + 80_000  # (start, end]: readings 3..8
    (s, ins, outs), = flows.window(["a-door", "elsewhere"], start, end)
    assert s == "a-door"
    assert ins == sum(10 * i for i in range(3, 9))  # per minute over a 60 s window
    assert outs == sum(range(3, 9))


def test_graph_counters_are_the_line_counters_of_zones_in_the_graph() -> None:
    zones = pair()
    lone = Zone("c", "ค", "c", 100.0, "moving", (SensorSpec("c-line", Kind.LINE_COUNT),))
    assert graph_counters([*zones, lone]) == {"a-door"}


# -- the rule -------------------------------------------------------------------------------
def update(zid: str, end: int, density: float, trend: float = 0.0,
           flows: tuple[tuple[str, float, float], ...] = (), area: float = 600.0
           ) -> DensityUpdate:
    return DensityUpdate(zid, end - W, end, density * area, density, ("cam",), trend,
                         sensor_age_ms=(0,), line_flows=flows)


def feed(watch: SpillWatch, zone: Zone, steps: int, *, inflow: Any, outflow: float = 0.0,
         neighbour_density: float = 2.5, neighbour_trend: float = 0.1,
         neighbour_lag_ms: int = 0, density: float = 1.2) -> list[Any]:
    out = []
    for k in range(steps):
        end = T0 + k * 5000
        u = update("a", end, density, flows=(("a-door", inflow(k), outflow),))
        nb = update("b", end - neighbour_lag_ms, neighbour_density, neighbour_trend)
        out.append(watch.assess(zone, u, STANDING_DEFAULTS.critical,
                                {"b": (nb, STANDING_DEFAULTS.elevated)}))
    return out


def test_a_filling_neighbour_with_a_rising_inflow_gives_an_eta_from_the_net_inflow() -> None:
    a = pair()[0]
    res = feed(SpillWatch(), a, 30, inflow=lambda k: 100 + 10 * k, outflow=20)
    assert res[:5] == [None] * 5  # too little inflow history to call it rising
    last = res[-1]
    assert last is not None
    assert last.neighbour == "b"
    inflow = 100 + 10 * 29
    assert last.inflow_per_min == inflow
    assert last.net_per_min == inflow - 20
    room = STANDING_DEFAULTS.critical * 600 - 1.2 * 600
    # The ETA is no later than at the net inflow of now, earlier as the inflow rises.
    assert 0 < last.eta_s < room / ((inflow - 20) / 60)


@pytest.mark.parametrize(("what", "kw"), [
    ("the neighbour is not filling (flat)", {"neighbour_trend": 0.0}),
    ("the neighbour is far below its elevated level", {"neighbour_density": 0.5}),
    ("the neighbour's record is stale", {"neighbour_lag_ms": 45_000}),
    ("the inflow is flat", {"inflow": lambda k: 300.0}),
    ("the inflow is too small", {"inflow": lambda k: 0.2 * k}),
    ("more leave than come in", {"outflow": 2000.0}),
])
def test_no_spill_over_without_every_condition(what: str, kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"inflow": lambda k: 100 + 10 * k} | kw
    res = feed(SpillWatch(), pair()[0], 30, **args)
    assert all(r is None for r in res), what


def test_off_means_off() -> None:
    res = feed(SpillWatch(SpillConfig(enabled=False)), pair()[0], 30,
               inflow=lambda k: 100 + 10 * k)
    assert all(r is None for r in res)


def test_eta_from_inflow_matches_a_step_by_step_reference() -> None:
    rng = random.Random(5)
    for _ in range(200):
        room, net, rise = rng.uniform(10, 5000), rng.uniform(0.1, 20), rng.uniform(0, 0.2)
        eta = eta_from_inflow(room, net, rise)
        t, filled, dt = 0.0, 0.0, 0.01
        while filled < room:  # integrate the inflow independently
            filled += (net + rise * (t + dt / 2)) * dt
            t += dt
        assert eta == pytest.approx(t, abs=0.02, rel=1e-3)


def test_density_records_round_trip_for_the_neighbour_follower() -> None:
    u = DensityUpdate("b", T0 - W, T0, 1500.0, 2.5, ("cam",), 0.12,
                      line_flows=(("a-door", 120.0, 3.5),))
    back = density_from_record(orjson.loads(density_record(u)))
    assert back is not None
    assert (back.zone_id, back.window_start_ms, back.window_end_ms, back.density,
            back.trend_per_min, back.line_flows) == ("b", T0 - W, T0, 2.5, 0.12,
                                                     (("a-door", 120.0, 3.5),))
    plain = orjson.loads(density_record(u._replace(line_flows=())))
    assert "line_flows" not in plain
    for bad in ({}, {"zone_id": 1, "window_start": "x"}, {**plain, "line_flows": [{}]},
                {**plain, "window_end": "yesterday"}):
        assert density_from_record(bad) is None


# -- the alarm ------------------------------------------------------------------------------
def test_the_alarm_raises_one_held_spillover_episode_at_elevated() -> None:
    alarm = ZoneAlarm(STANDING_DEFAULTS, AlarmConfig())
    trs = []
    # Density flat and calm; a spill-over ETA within the horizon (600 s), then hovering
    # beyond it but within the hold (horizon + 50 %), then far.
    etas = [None] * 10 + [500] * 4 + [620, 590, 700, 560, 850] * 8 + [2000] * 20
    far = etas.index(2000)
    for k, eta in enumerate(etas):
        trs += alarm.observe(1.2, 0.0, T0 + k * 5000, 720.0, W, spill_eta_s=eta)
    assert [(t.status, t.level, t.reason) for t in trs] == [
        ("raised", Level.ELEVATED, "spillover"), ("resolved", Level.NORMAL, "spillover")]
    raised, resolved = trs
    assert raised.episode_start_ms == T0 + 12 * 5000  # the on-delay: 10 s within the horizon
    # The hold: beyond horizon + margin for the off-delay (30 s) before it resolves.
    assert alarm.level is Level.NORMAL
    assert resolved.seq == 2
    alarm2 = ZoneAlarm(STANDING_DEFAULTS, AlarmConfig())
    times = [tr for k, eta in enumerate(etas[:far + 5])
             for tr in alarm2.observe(1.2, 0.0, T0 + k * 5000, 720.0, W, spill_eta_s=eta)]
    assert len(times) == 1  # still raised 25 s into the far ETAs


def test_the_zones_own_forecast_keeps_its_reason() -> None:
    trs = []
    for spill in (None, 590.0):
        alarm = ZoneAlarm(STANDING_DEFAULTS, AlarmConfig())
        got = []
        for k in range(40):  # a steady rise: the zone's own forecast within the horizon
            d = 1.0 + 0.008 * k * 5
            got += alarm.observe(d, 0.0, T0 + k * 5000, d * 600, W,
                                 spill_eta_s=spill if k >= 16 else None)
        trs.append([(t.status, t.reason, t.episode_start_ms) for t in got])
    assert trs[0][0][:2] == ("raised", "forecast")
    assert trs[1] == trs[0]  # a later spill-over changes nothing of the zone's own forecast


# -- alerts, across partitions --------------------------------------------------------------
def tracker(config: AlarmConfig | None = None) -> AlertTracker:
    return AlertTracker({z.zone_id: z for z in pair()}, config)


def drive(t: AlertTracker, *, foreign: bool) -> list[dict[str, Any]]:
    """Zone a's windows with a rising inflow from b; b's records either observed here (b's
    partition is this worker's) or followed from the density topic (another worker's)."""
    alerts = []
    for k in range(60):
        end = T0 + k * 5000
        nb = update("b", end, 2.4 + 0.01 * k, 0.12)
        if foreign:
            t.neighbour_record(nb)
        else:
            t.observe(nb)
        flows = (("a-door", 150.0 + 12 * k, 30.0),)
        alerts += t.observe(update("a", end, 1.2, flows=flows))
    return alerts


@pytest.mark.parametrize("foreign", [False, True])
def test_a_zone_gets_its_spillover_alert_whichever_worker_drives_the_neighbour(
        foreign: bool) -> None:
    alerts = drive(tracker(), foreign=foreign)
    spill = [a for a in alerts if a["zone_id"] == "a"]
    assert spill
    assert spill[0]["reason"] == "spillover"
    assert spill[0]["level"] == "elevated"
    a = spill[0]
    assert a["spillover"]["neighbour"] == "b"
    assert a["spillover"]["net_inflow_per_min"] == pytest.approx(
        a["spillover"]["inflow_per_min"] - 30)
    assert 0 < a["eta_critical_s"] <= 600
    assert "crowd from b flowing in" in a["message"]["en"]
    assert "ฝูงชนจากกกำลังไหลเข้ามา" in a["message"]["th"]
    schema = orjson.loads((REPO / "schemas/json/alert.v1.json").read_bytes())
    jsonschema.validate(a, schema)
    xml = to_cap(a, zone_names={"th": "ก", "en": "a"}).decode()
    assert "<urgency>Future</urgency>" in xml
    assert "<certainty>Likely</certainty>" in xml
    assert "<valueName>spillover_from</valueName><value>b</value>" in xml


def test_a_followed_record_of_a_non_neighbour_or_an_older_one_is_not_kept() -> None:
    t = tracker()
    assert not t.neighbour_record(update("zz", T0, 3.0))
    assert t.neighbour_record(update("b", T0, 3.0))
    assert not t.neighbour_record(update("b", T0 - 5000, 3.0))


def test_spillover_off_gives_no_spillover_alert() -> None:
    alerts = drive(tracker(AlarmConfig(spillover=False)), foreign=True)
    assert not [a for a in alerts if a["reason"] == "spillover"]
    assert tracker(AlarmConfig().legacy()).spill_config.enabled is False


def test_inflows_are_reported_for_metrics() -> None:
    t = tracker()
    drive(t, foreign=True)
    ((zone, nb, v),) = t.inflows()
    assert (zone, nb) == ("a", "b")
    assert v == 150.0 + 12 * 59
    assert not math.isnan(v)


def test_a_counter_the_neighbour_owns_counts_in_its_into_direction() -> None:
    """b's boundary with a is a's door, read as a's exits: b's inflow and net come from a's
    density record (followed), with the door's entries as flow back out of b."""
    b = pair()[1]
    watch = SpillWatch()
    res = []
    for k in range(30):
        end = T0 + k * 5000
        nb_a = update("a", end, 2.5, 0.1, flows=(("a-door", 15.0, 100.0 + 10 * k),))
        res.append(watch.assess(b, update("b", end, 1.0), STANDING_DEFAULTS.critical,
                                {"a": (nb_a, STANDING_DEFAULTS.elevated)}))
    last = res[-1]
    assert last is not None
    assert last.neighbour == "a"
    assert last.inflow_per_min == 100.0 + 10 * 29
    assert last.net_per_min == 100.0 + 10 * 29 - 15.0


@pytest.mark.kernels
def test_the_pipeline_puts_line_flows_on_the_density_records_of_graph_zones() -> None:
    from streams.pipeline import Pipeline  # noqa: PLC0415
    from streams.records import SourceMessage  # noqa: PLC0415

    zones = pair()
    pipe = Pipeline(zones)
    msgs = []
    for i in range(30):
        evs = [{"event_id": f"d{i}", "sensor_id": "a-door", "zone_id": "a",
                "kind": "line_count", "ts": T0 + i * 5000, "entries": 10, "exits": 2},
               {"event_id": f"c{i}", "sensor_id": "a-cam", "zone_id": "a",
                "kind": "occupancy", "ts": T0 + i * 5000, "count": 600}]
        msgs.append(SourceMessage("sensors", 0, i, None, b"a", orjson.dumps(evs)))
    msgs.append(msgs[3])  # a re-sent batch: its door readings count once
    out = pipe.process_sensor_batch(msgs)
    out2 = pipe.finish()
    recs = [orjson.loads(r.value) for r in out.density + out2.density]
    mine = [r for r in recs if r["zone_id"] == "a"]
    assert mine
    assert all(r["zone_id"] == "a" for r in recs)  # b has no readings
    # 12 readings of 10 entries (one per 5 s) in a full 60 s window: 120 per minute.
    assert any(r["line_flows"] == [{"sensor_id": "a-door", "entries_per_min": 120.0,
                                    "exits_per_min": 24.0}] for r in mine)
    assert all(r["line_flows"][0]["entries_per_min"] <= 120.0 for r in mine)


# -- hysteresis: one spill, one episode ----------------------------------------------------
def _hover(watch: SpillWatch, steps: int, on: Any, *, keep_density: float = 2.5
           ) -> tuple[list[Any], list[Any]]:
    """A steady spill (inflow from b rising), b's filling condition ``on(k)`` true or not
    per 5 s window; the spill-over's results and the alarm's transitions."""
    a = pair()[0]
    alarm = ZoneAlarm(STANDING_DEFAULTS, AlarmConfig())
    res, trs = [], []
    for k in range(steps):
        end = T0 + k * 5000
        u = update("a", end, 1.2, flows=(("a-door", 100.0 + 2 * k, 20.0),))
        nb = update("b", end, 2.5 if on(k) else keep_density, 0.1 if on(k) else 0.0)
        spill = watch.assess(a, u, STANDING_DEFAULTS.critical,
                             {"b": (nb, STANDING_DEFAULTS.elevated)})
        res.append(spill)
        trs += alarm.observe(1.2, 0.0, end, 720.0, W,
                             spill_eta_s=None if spill is None else spill.eta_s)
    return res, trs


def test_a_hovering_spill_is_one_episode_not_one_a_minute() -> None:
    # The neighbour's filling test true for 20 s, false for 40 s, repeated over 600 s (its
    # trend hovering about the threshold): before the keep condition, 10 raises.
    res, trs = _hover(SpillWatch(), 120, lambda k: k % 12 < 4)
    assert [(t.status, t.reason) for t in trs] == [("raised", "spillover")]
    # Raised at the first filling window with a known rise (the 13th), kept from there on.
    first = next(k for k, r in enumerate(res) if r is not None)
    assert first == 12
    assert all(r is not None for r in res[first:])
    # The keep condition makes no forecast of its own: the last raised ETA stands.
    assert all(res[k] is res[k - 1] for k in range(first + 1, 120) if k % 12 >= 4)
    assert len({r.eta_s for r in res[first:]}) > 1  # and each raising window renews it


def test_the_off_delay_bridges_a_gap_and_the_spill_over_then_ends() -> None:
    cfg = SpillConfig()
    off_windows = round(cfg.off_delay_s / 5)
    # b falls below the keep level for 40 s (within the off-delay): one episode, the last
    # ETA standing; then for good: the spill-over ends at the off-delay, not before.
    gap = range(40, 48)
    stop = 80
    res, trs = _hover(SpillWatch(cfg), stop + off_windows + 10,
                      lambda k: k < stop and k not in gap, keep_density=0.5)
    assert all(r is not None for r in res[5:stop + off_windows])
    assert res[gap.start] == res[gap.start - 1]  # held: the last spill-over stands
    assert all(r is None for r in res[stop + off_windows:])
    assert [(t.status, t.reason) for t in trs] == [("raised", "spillover"),
                                                   ("resolved", "spillover")]


@pytest.mark.parametrize("kw", [{"keep_fill_from": 0.9}, {"keep_inflow_per_min": 11.0},
                                {"keep_trend_per_min": 0.03}, {"off_delay_s": -1.0}])
def test_the_keep_condition_is_weaker_than_the_raise(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        SpillConfig(**kw)
