"""Issue 16, part a: the indicator floor (rate of rise, flow breakdown, counter-flow) in the
alarm, its texts, CAP rendering, registry field and state round trip."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from schemas import Kind, SensorSpec, Zone, ZoneRegistryError, load_zones
from streams import MOVING_DEFAULTS, STANDING_DEFAULTS, AlertTracker, DensityUpdate, Level
from streams.alarm import AlarmConfig, Transition, ZoneAlarm
from streams.cap import CAP_NS, to_cap
from streams.indicators_flow import FlowIndicatorConfig, Hold, LineFlows
from streams.messages import alert_message
from streams.registry import RegistryRules, check_zones

W = 60_000
OFF = AlarmConfig(indicators=FlowIndicatorConfig().only(None))


def feed(alarm: ZoneAlarm, steps: list[tuple[float, float, LineFlows]]
         ) -> list[tuple[float, Transition]]:
    """(t s, density, flows) windows of 60 s, every 5 s, through the alarm."""
    out = []
    for t, d, flows in steps:
        out += [(t, tr) for tr in alarm.observe(d, math.nan, round(t * 1000), window_ms=W,
                                                flows=flows)]
    return out


NO_FLOWS = LineFlows()


def ramp(d0: float, rate_per_min: float, seconds: float, flows: LineFlows = NO_FLOWS,
         noise: float = 0.0, seed: int = 1, t0: float = 0.0
         ) -> list[tuple[float, float, LineFlows]]:
    rng = random.Random(seed)
    return [(t0 + 5.0 * i, d0 + rate_per_min * 5 * i / 60 + rng.gauss(0, noise), flows)
            for i in range(int(seconds / 5))]


def test_hold_needs_the_on_delay_and_keeps_through_short_lapses() -> None:
    h = Hold()
    assert not h.update(0, True, True, 15_000, 60_000)
    assert not h.update(10_000, True, True, 15_000, 60_000)
    assert h.update(15_000, True, True, 15_000, 60_000)  # held for the on-delay
    # The keep condition fails for less than the off-delay, twice: still active.
    assert h.update(20_000, False, False, 15_000, 60_000)
    assert h.update(70_000, False, True, 15_000, 60_000)
    assert h.update(100_000, False, False, 15_000, 60_000)
    assert not h.update(160_000, False, False, 15_000, 60_000)  # failed for the off-delay
    # A raise condition broken before the on-delay starts over.
    assert not h.update(170_000, True, True, 15_000, 60_000)
    assert not h.update(175_000, False, True, 15_000, 60_000)
    assert not h.update(185_000, True, True, 15_000, 60_000)
    assert not h.update(195_000, True, True, 15_000, 60_000)


def test_rate_of_rise_raises_elevated_below_the_levels_without_a_forecast() -> None:
    # Standing, 1.0 rising 0.3 p/m² per minute: elevated (2.0) is reached at 200 s; the
    # forecast (critical 5.0 within 600 s) only raises at about 1.85 p/m².
    steps = ramp(1.0, 0.3, 180, noise=0.01)
    on = feed(ZoneAlarm(STANDING_DEFAULTS), steps)
    assert [(tr.status, tr.level, tr.reason) for _, tr in on] == [
        ("raised", Level.ELEVATED, "rate_of_rise")]
    t, _ = on[0]
    assert t < 120  # a density of about 1.6
    off = feed(ZoneAlarm(STANDING_DEFAULTS, OFF), steps)
    assert [(tr.status, tr.reason) for _, tr in off] == [("raised", "forecast")]
    assert off[0][0] - t >= 60


@pytest.mark.parametrize("seed", range(10))
def test_an_evening_swell_stays_quiet(seed: int) -> None:
    # 0.08 p/m² per minute for 15 minutes, up to 1.8 (elevated is 2.0), with noise.
    steps = ramp(0.6, 0.08, 900, noise=0.03, seed=seed)
    assert feed(ZoneAlarm(STANDING_DEFAULTS), steps) == []


def test_rate_of_rise_episode_ends_after_the_rise_with_the_off_delay() -> None:
    alarm = ZoneAlarm(STANDING_DEFAULTS)
    steps = ramp(1.0, 0.3, 150) + ramp(1.75, 0.0, 600, t0=150)
    out = feed(alarm, steps)
    assert [(tr.status, tr.reason) for _, tr in out] == [("raised", "rate_of_rise"),
                                                          ("resolved", "rate_of_rise")]
    raised, resolved = out[0][0], out[1][0]
    # The slope falls under the keep threshold (0.1/min) within the 180 s span, then the
    # indicator's off-delay (60 s), then the alarm's own off-delay (30 s).
    assert resolved - 150 >= 60 + 30
    assert resolved - raised < 600


def breakdown(pms_before: float, pms_after: float, rise_per_min: float
              ) -> list[tuple[float, float, LineFlows]]:
    """A standing zone at 1.2 p/m² with a flowing door, then the outflow changes at 300 s
    while the density rises."""
    steps = [(5.0 * i, 1.2, LineFlows(pms_before)) for i in range(60)]
    steps += [(300 + 5.0 * i, 1.2 + rise_per_min * 5 * i / 60, LineFlows(pms_after))
              for i in range(36)]
    return steps


def test_flow_breakdown_raises_when_the_outflow_collapses_while_density_rises() -> None:
    cfg = AlarmConfig(indicators=FlowIndicatorConfig().only("flow_breakdown"))
    out = feed(ZoneAlarm(STANDING_DEFAULTS, cfg), breakdown(1.2, 0.4, 0.1))
    assert [(tr.status, tr.level, tr.reason) for _, tr in out] == [
        ("raised", Level.ELEVATED, "flow_breakdown")]
    assert 300 < out[0][0] < 420  # density still about 1.35, elevated is 2.0


@pytest.mark.parametrize(("before", "after", "rise"), [
    (1.2, 1.1, 0.1),  # the outflow holds: no breakdown
    (0.6, 0.3, 0.1),  # never flowing at 0.8 p/m/s: a quiet door, not a breakdown
    (1.2, 0.4, -0.1),  # the outflow falls as the zone empties
    (math.nan, math.nan, 0.1),  # no counter with a width
])
def test_flow_breakdown_stays_quiet(before: float, after: float, rise: float) -> None:
    cfg = AlarmConfig(indicators=FlowIndicatorConfig().only("flow_breakdown"))
    assert feed(ZoneAlarm(STANDING_DEFAULTS, cfg), breakdown(before, after, rise)) == []


def test_counter_flow_raises_on_two_balanced_streams_in_a_filling_zone() -> None:
    cfg = AlarmConfig(indicators=FlowIndicatorConfig().only("counter_flow"))
    steps = ramp(0.6, 0.07, 400, LineFlows(0.3, 30.0, 0.8), noise=0.005)
    out = feed(ZoneAlarm(MOVING_DEFAULTS, cfg), steps)
    assert [(tr.status, tr.level, tr.reason) for _, tr in out] == [
        ("raised", Level.ELEVATED, "counter_flow")]
    assert out[0][0] < 300  # density under 0.95; elevated is 1.08
    for flows in (LineFlows(0.3, 30.0, 0.1),  # one stream and a trickle
                  LineFlows(0.3, 10.0, 0.8)):  # two light streams
        assert feed(ZoneAlarm(MOVING_DEFAULTS, cfg), ramp(0.6, 0.07, 320, flows)) == []
    # Two streams through a zone that does not fill: no alert either.
    assert feed(ZoneAlarm(MOVING_DEFAULTS, cfg),
                ramp(0.7, 0.0, 600, LineFlows(0.3, 30.0, 0.8), noise=0.005)) == []


def test_the_density_levels_take_over_an_indicator_episode() -> None:
    alarm = ZoneAlarm(STANDING_DEFAULTS)
    out = feed(alarm, ramp(1.0, 0.3, 600))  # up to 4.0: high at 3.5
    assert [(tr.status, tr.level, tr.reason) for _, tr in out] == [
        ("raised", Level.ELEVATED, "rate_of_rise"), ("escalated", Level.HIGH, "density")]
    assert len({tr.episode_start_ms for _, tr in out}) == 1


def test_legacy_configuration_has_no_indicators() -> None:
    assert not AlarmConfig().legacy().indicators.any
    with pytest.raises(ValueError, match="rise_keep_per_min"):
        FlowIndicatorConfig(rise_keep_per_min=0.5)


def update(zone: str, t_s: float, density: float, flows: LineFlows) -> DensityUpdate:
    end = round(t_s * 1000)
    return DensityUpdate(zone, end - W, end, density * 600, density, ("cam",),
                         sensor_age_ms=(0,),
                         outflow_per_m_s=flows.outflow_per_m_s,
                         counterflow_per_m_min=flows.counterflow_per_m_min,
                         counterflow_balance=flows.counterflow_balance)


ZONE = Zone("v", "วิหาร", "Vihara", 600.0, "standing",
            (SensorSpec("cam", Kind.OCCUPANCY, coverage_m2=600.0),
             SensorSpec("door", Kind.LINE_COUNT, width_m=4.0)))


def test_alert_record_text_and_cap_of_a_flow_breakdown() -> None:
    tracker = AlertTracker({"v": ZONE})
    alerts = []
    for t, d, flows in breakdown(1.2, 0.4, 0.1):
        alerts += tracker.observe(update("v", t, d, flows))
    assert [a["reason"] for a in alerts] == ["flow_breakdown"]
    a = alerts[0]
    assert a["flows"]["outflow_per_m_s"] == 0.4
    assert 0 < a["flows"]["rise_per_min"] <= 0.1  # (the 180 s fit still holds the flat part)
    assert "ติดขัด" in a["message"]["th"]
    assert "outflow has broken down" in a["message"]["en"]
    root = ET.fromstring(to_cap(a, zone_names={"th": ZONE.name_th, "en": ZONE.name_en}))
    params = {p.findtext(f"{{{CAP_NS}}}valueName"): p.findtext(f"{{{CAP_NS}}}value")
              for p in root.iter(f"{{{CAP_NS}}}parameter")}
    assert params["indicator"] == "flow_breakdown"
    assert params["outflow_per_m_s"] == "0.4"
    assert root.findtext(f"{{{CAP_NS}}}info/{{{CAP_NS}}}certainty") == "Observed"


def test_indicator_state_survives_a_snapshot() -> None:
    cfg = AlarmConfig(indicators=FlowIndicatorConfig().only("flow_breakdown"))
    steps = breakdown(1.2, 0.4, 0.1)
    a = AlertTracker({"v": ZONE}, cfg)
    for t, d, flows in steps[:70]:  # the outflow fell 50 s ago: the breakdown is pending
        a.observe(update("v", t, d, flows))
    state = a.export_state(["v"])
    b = AlertTracker({"v": ZONE}, cfg)
    b.import_state(["v"], state)
    # (A snapshot from before issue 16 has no "indicators": it starts inactive.)
    assert state["v"]["indicators"]["peak"]
    rest_a = [x["reason"] for t, d, f in steps[70:] for x in a.observe(update("v", t, d, f))]
    rest_b = [x["reason"] for t, d, f in steps[70:] for x in b.observe(update("v", t, d, f))]
    assert rest_a == rest_b == ["flow_breakdown"]


def test_messages_name_each_indicator_in_both_languages() -> None:
    for reason, th, en in (("rate_of_rise", "เพิ่มขึ้นเร็ว", "rising fast"),
                           ("counter_flow", "สวนทาง", "against each other")):
        m = alert_message(name_th="ก", name_en="A", level="elevated", status="raised",
                          reason=reason, density=1.0, eta_s=None, ts_ms=0)
        assert th in m["th"]
        assert en in m["en"]
        done = alert_message(name_th="ก", name_en="A", level="normal", status="resolved",
                             reason=reason, density=1.0, eta_s=None, ts_ms=0)
        assert en not in done["en"]


def test_width_must_be_finite_and_positive() -> None:
    z = replace(ZONE, sensors=(SensorSpec("door", Kind.LINE_COUNT, width_m=math.inf),))
    with pytest.raises(ZoneRegistryError, match="width_m must be a finite number > 0"):
        check_zones([z], RegistryRules())


def test_registry_reads_width_m(tmp_path: Path) -> None:
    f = tmp_path / "zones.yaml"
    f.write_text("- {zone_id: a, name: {th: ก, en: A}, area_m2: 100, crowd: moving, "
                 "sensors: [{sensor_id: s, kind: line_count, width_m: 3.5}]}\n")
    assert load_zones(f)[0].sensors[0].width_m == 3.5
    f.write_text("- {zone_id: a, name: {th: ก, en: A}, area_m2: 100, crowd: moving, "
                 "sensors: [{sensor_id: s, kind: line_count, width_m: 0}]}\n")
    with pytest.raises(ZoneRegistryError, match="width_m"):
        load_zones(f)


def test_calm_zones_keep_no_indicator_state() -> None:
    alarm = ZoneAlarm(STANDING_DEFAULTS)
    feed(alarm, ramp(0.5, 0.0, 300))
    assert alarm.flow is None  # (100,000 calm zones: no state each)
    # A counter with a width: the outflow's recent peak is remembered, crowded or not.
    feed(alarm, ramp(0.5, 0.0, 60, LineFlows(1.0)))
    assert alarm.flow is not None
    assert alarm.flow.peak
    # A crowded zone that stops rising forgets it all once the holds end.
    calm = ZoneAlarm(STANDING_DEFAULTS)
    feed(calm, ramp(1.0, 0.3, 150) + ramp(1.75, 0.0, 600, t0=150) + ramp(0.5, 0.0, 60, t0=750))
    assert calm.flow is None


def test_every_reason_beyond_density_in_the_contract_is_counted_as_an_indicator() -> None:
    """alert.v1.json's reasons are the core five plus the indicators beyond density; the
    indicator alerts counter (agents/worker) counts exactly the latter."""
    import json  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from streams import BEYOND_DENSITY_REASONS  # noqa: PLC0415

    schema = json.loads((Path(__file__).parents[2] / "schemas/json/alert.v1.json").read_text())
    reasons = set(schema["properties"]["reason"]["examples"])
    core = {"density", "forecast", "report", "capacity", "sensing_lost"}
    assert reasons - core == BEYOND_DENSITY_REASONS
