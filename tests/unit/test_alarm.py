"""The alarm state machine, as tables: (time s, density p/m², trend p/m²/min) -> changes."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from streams import STANDING_DEFAULTS, Level
from streams.alarm import AlarmConfig, ZoneAlarm, eta_critical_s

NAN = math.nan


def run(steps: list[tuple[float, float, float]], cfg: AlarmConfig | None = None
        ) -> list[tuple[float, str, str]]:
    """Feed (t, density, trend); return (t, status, level) of every transition."""
    alarm = ZoneAlarm(STANDING_DEFAULTS, cfg or AlarmConfig())
    out = []
    for t, d, trend in steps:
        for tr in alarm.observe(d, trend, round(t * 1000)):
            out.append((t, tr.status, tr.level.wire))
    return out


def every_5s(densities: list[float], trend: float = 0.0) -> list[tuple[float, float, float]]:
    return [(5.0 * i, d, trend) for i, d in enumerate(densities)]


def test_surge_goes_through_every_level_once() -> None:
    # standing: elevated 2.0, high 3.5, critical 5.0; on-delay 10 s, off-delay 30 s, band 10 %
    d = [1.0, 2.2, 2.4, 2.6, 3.6, 3.8, 4.0, 5.2, 5.5, 5.4, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0,
         1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert run(every_5s(d)) == [
        (15.0, "raised", "elevated"),     # >= 2.0 since 5 s: held 10 s at 15 s
        (30.0, "escalated", "high"),      # >= 3.5 since 20 s
        (45.0, "escalated", "critical"),  # >= 5.0 since 35 s
        (80.0, "deescalated", "high"),    # < 4.5 since 50 s: off-delay 30 s
        (115.0, "resolved", "normal"),    # < 3.15 since 85 s (skips elevated: 1.0 is normal)
    ]


def test_flapping_around_a_threshold_is_one_episode() -> None:
    # 1.9 / 2.1 alternating for 5 minutes: raised once (on-delay needs 10 s at >= 2.0, never
    # met), so nothing at all; with the on-delay met once, it stays raised (dead-band).
    flap = every_5s([1.9, 2.1] * 30)
    assert run(flap) == []
    steady_then_flap = every_5s([2.1, 2.1, 2.1] + [1.9, 2.1] * 30 + [1.0] * 10)
    assert run(steady_then_flap) == [
        (10.0, "raised", "elevated"),
        (345.0, "resolved", "normal"),  # below 1.8 from 315 s, for the 30 s off-delay
    ]


def test_corroborating_report_removes_the_on_delay() -> None:
    alarm = ZoneAlarm(STANDING_DEFAULTS)
    alarm.corroborate(0)
    (tr,) = alarm.observe(2.5, 0.0, 5_000)
    assert (tr.status, tr.level) == ("raised", Level.ELEVATED)


def test_forecast_raises_early_and_eta_is_reported() -> None:
    # 2.5 p/m² rising 0.5 p/m² per minute: critical (5.0) in 300 s, inside the 600 s horizon.
    assert eta_critical_s(2.5, 0.5, 5.0) == 300.0
    assert eta_critical_s(2.5, 0.0, 5.0) is None
    assert eta_critical_s(5.5, 1.0, 5.0) is None
    out = run([(0, 1.5, 0.5), (5, 1.55, 0.5), (10, 1.6, 0.5), (15, 1.65, 0.5)])
    assert out == [(10, "raised", "elevated")]  # at 1.6 p/m², normal by density


def test_report_floor_holds_then_expires() -> None:
    alarm = ZoneAlarm(STANDING_DEFAULTS, AlarmConfig(report_hold_s=60))
    (tr,) = alarm.report_floor(Level.CRITICAL, 0)
    assert (tr.status, tr.level, tr.reason) == ("raised", Level.CRITICAL, "report")
    assert alarm.observe(0.5, 0.0, 30_000) == []  # sensors calm, the report still holds
    out = []
    for t in range(60, 130, 5):
        out += alarm.observe(0.5, 0.0, t * 1000)
    assert [(x.status, x.level) for x in out] == [("resolved", Level.NORMAL)]


def test_critical_re_alarms_while_it_lasts() -> None:
    out = run(every_5s([6.0] * 150), AlarmConfig(on_delay_s=0))
    reminders = [t for t, s, _ in out if s == "raised"][1:]
    assert reminders == [300.0, 600.0]


def test_blind_zone_keeps_its_level_and_says_it_is_blind() -> None:
    out = run(every_5s([6.0, 6.0, 6.0] + [NAN] * 20), AlarmConfig(on_delay_s=0))
    assert out == [(0.0, "raised", "critical"), (15.0, "updated", "critical")]


def test_blind_episode_re_alarms_never_resolves_and_goes_on_when_data_returns() -> None:
    from streams.alarm import ZoneAlarm  # noqa: PLC0415
    from streams.levels import STANDING_DEFAULTS  # noqa: PLC0415

    a = ZoneAlarm(STANDING_DEFAULTS, AlarmConfig(on_delay_s=0, off_delay_s=0, realarm_s=300))
    assert [t.status for t in a.observe(6.0, 0.0, 0)] == ["raised"]
    lost = a.observe(NAN, math.nan, 5_000)
    assert [(t.status, t.reason, t.level, t.seq) for t in lost] == [
        ("updated", "sensing_lost", Level.CRITICAL, 2)]
    # Ticks while blind: re-alarmed every 300 s, never resolved, whatever the time.
    ticks = [t for now in range(10_000, 3_600_000, 10_000) for t in a.tick(now)]
    assert [t.status for t in ticks] == ["updated"] * 11
    assert all(t.reminder and t.reason == "sensing_lost" for t in ticks)
    assert a.level is Level.CRITICAL
    # Data returns at a low density: the episode goes on from the measured density.
    back = a.observe(0.5, 0.0, 3_600_000)
    assert [t.status for t in back] == ["resolved"]
    assert [t.seq for t in ticks + back] == list(range(3, 3 + len(ticks) + 1))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 9), min_size=1, max_size=60))
def test_every_episode_resolves_when_density_returns_to_normal(densities: list[float]) -> None:
    """Lifecycle property: statuses follow raised (escalated|deescalated)* resolved, and a
    long calm tail always resolves."""
    out = run(every_5s(densities + [0.5] * 20))
    open_ = False
    for _, status, level in out:
        if status == "raised":
            assert not open_ or level == "critical"  # a second 'raised' is a reminder
            open_ = True
        else:
            assert open_
            open_ = status != "resolved"
    assert not open_


def test_capacity_rule_raises_with_its_own_reason() -> None:
    alarm = ZoneAlarm(STANDING_DEFAULTS, AlarmConfig(on_delay_s=0), capacity=1000)
    # 1.0 p/m² is normal by density; 1,050 people is 105 % of capacity: high.
    (tr,) = alarm.observe(1.0, 0.0, 0, occupancy=1050.0)
    assert (tr.status, tr.level, tr.reason) == ("raised", Level.HIGH, "capacity")
    # Density takes over once it is the higher of the two.
    (tr,) = alarm.observe(5.5, 0.0, 5_000, occupancy=1050.0)
    assert (tr.level, tr.reason) == (Level.CRITICAL, "density")


def test_global_levels_are_configurable() -> None:
    from schemas import Thresholds, Zone  # noqa: PLC0415
    from streams.alerts import AlertTracker  # noqa: PLC0415

    z = Zone("z", "z", "z", 100.0, "standing")
    tracker = AlertTracker({"z": z}, AlarmConfig(standing=Thresholds(1.0, 2.0, 3.0)))
    assert tracker.thresholds("z") == Thresholds(1.0, 2.0, 3.0)
