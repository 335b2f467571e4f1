"""The hot-spot indicator (issue 16): the densest grid cell's alarm, the zone alarm's
``hotspot`` reason, its alert fields, messages and CAP, and the simulator's scenario."""

from __future__ import annotations

import math
from xml.etree import ElementTree as ET

import pytest

from schemas import parse_zone
from streams.alarm import AlarmConfig, ZoneAlarm
from streams.alerts import AlertTracker
from streams.cap import to_cap
from streams.engine import DensityUpdate
from streams.hotspot import HOT_RATIO, KEEP_RATIO, HotspotWatch
from streams.levels import MOVING_DEFAULTS, STANDING_DEFAULTS, Level

ZONE = parse_zone({"zone_id": "g", "name": {"th": "ลาน", "en": "Grounds"}, "area_m2": 10000,
                   "crowd": "moving",
                   "grid": {"cell_m": 50, "origin": [16.0, 100.0], "rows": 2, "cols": 2},
                   "sensors": []})
SLIDE = 5000


def upd(i: int, mean: float, hot: float, cell: str = "r1c1") -> DensityUpdate:
    ts = i * SLIDE
    return DensityUpdate("g", ts - 60_000, ts, mean * 10_000, mean, (), hot_cell=cell,
                         hot_density=hot, cells=(mean, mean, mean, hot))


def run(series: list[tuple[float, float]]) -> list[tuple[int, dict[str, object]]]:
    t = AlertTracker({"g": ZONE})
    return [(i, a) for i, (m, h) in enumerate(series, 1) for a in t.observe(upd(i, m, h))]


def test_a_pocket_raises_hotspot_after_the_on_delay_and_resolves_after_the_off_delay() -> None:
    series = [(0.3, 0.3)] * 10 + [(0.3, 2.5)] * 40 + [(0.3, 0.3)] * 20
    alerts = run(series)
    assert [(i, a["status"], a["level"], a["reason"]) for i, a in alerts] == [
        (13, "raised", "high", "hotspot"),  # 2.5 from window 11: held 10 s at window 13
        (57, "resolved", "normal", "hotspot"),  # below from window 51: 30 s off-delay
    ]
    raised = alerts[0][1]
    assert raised["hot_cell"] == "r1c1"
    assert raised["hot_density"] == 2.5
    assert raised["density"] == 0.3
    msg = raised["message"]
    assert isinstance(msg, dict)
    assert "r1c1" in msg["en"]
    assert "2.5" in msg["en"]
    assert "r1c1" in msg["th"]
    assert "r1c1" not in alerts[1][1]["message"]["en"]  # type: ignore[index]


def test_a_spike_shorter_than_the_on_delay_raises_nothing() -> None:
    assert run([(0.3, 0.3)] * 5 + [(0.3, 3.0)] + [(0.3, 0.3)] * 10) == []


def test_a_cell_at_the_means_level_is_no_hot_spot() -> None:
    """The whole zone at elevated: the density alarm says so, with reason density."""
    alerts = run([(1.5, 1.7)] * 20)
    assert [(a["level"], a["reason"]) for _, a in alerts] == [("elevated", "density")]


def test_a_cell_a_little_above_the_mean_is_no_pocket() -> None:
    """Just under the ratio: a cell at a level above the mean's, but not 1.25 x the mean."""
    mean = 0.95
    hot = mean * HOT_RATIO * 0.99
    assert hot >= MOVING_DEFAULTS.elevated > mean
    assert run([(mean, hot)] * 30) == []
    assert [a["reason"] for _, a in run([(mean, mean * HOT_RATIO * 1.01)] * 30)] == ["hotspot"]


def test_a_cell_hovering_at_a_threshold_does_not_flap() -> None:
    t = MOVING_DEFAULTS.high
    wobble = [t * (1.02 if k % 2 else 0.95) for k in range(120)]  # inside the dead-band
    alerts = run([(0.3, 2.0)] * 5 + [(0.3, t * 1.05)] * 5 + [(0.3, w) for w in wobble])
    assert [(a["status"], a["level"]) for _, a in alerts] == [("raised", "elevated"),
                                                               ("escalated", "high")]


def test_the_mean_catching_up_keeps_one_episode_and_the_mean_falling_back_keeps_the_pocket(
) -> None:
    series = ([(0.3, 2.5)] * 10 + [(1.5, 2.5)] * 10  # the zone fills to elevated too
              + [(0.3, 2.5)] * 20  # the zone empties; the pocket stays high
              + [(0.3, 0.3)] * 20)
    alerts = run(series)
    assert len({a["alert_id"] for _, a in alerts}) == 1
    assert [(a["status"], a["level"], a["reason"]) for _, a in alerts] == [
        ("raised", "high", "hotspot"), ("resolved", "normal", "hotspot")]


def test_hot_spot_escalates_to_critical() -> None:
    alerts = run([(0.5, 2.5)] * 10 + [(0.6, 4.0)] * 10)
    assert [(a["status"], a["level"], a["reason"]) for _, a in alerts] == [
        ("raised", "high", "hotspot"), ("escalated", "critical", "hotspot")]


def test_a_silent_grid_lets_the_hot_spot_clear_after_the_off_delay() -> None:
    alerts = run([(0.3, 2.5)] * 10 + [(0.3, math.nan)] * 10)
    assert [(i, a["status"]) for i, a in alerts] == [(3, "raised"), (17, "resolved")]


def test_zones_without_a_grid_are_untouched_by_the_hook() -> None:
    """``hot`` defaults to normal: the alarm's own tests cover the rest; here the same
    windows with and without a normal hot level give the same transitions."""
    a, b = ZoneAlarm(MOVING_DEFAULTS), ZoneAlarm(MOVING_DEFAULTS)
    for i in range(200):
        d = 0.5 + 2.5 * math.sin(i / 20) ** 2
        ta = a.observe(d, math.nan, i * SLIDE, window_ms=60_000)
        tb = b.observe(d, math.nan, i * SLIDE, window_ms=60_000, hot=Level.NORMAL)
        assert ta == tb


def test_the_hot_spot_survives_a_snapshot() -> None:
    t = AlertTracker({"g": ZONE})
    for i in range(1, 12):
        t.observe(upd(i, 0.3, 2.5))
    state = t.export_state(["g"])
    t2 = AlertTracker({"g": ZONE})
    t2.import_state(["g"], state)
    # The restored hot spot holds the zone: no resolution, no new episode, over a minute.
    assert [a for i in range(12, 24) for a in t2.observe(upd(i, 0.3, 2.5))] == []
    w = HotspotWatch.new(MOVING_DEFAULTS, t.config)
    w.restore(state["g"]["hot"])
    assert w.alarm.level is Level.HIGH


def test_cap_carries_the_hot_cell() -> None:
    alert = run([(0.3, 2.5)] * 5)[0][1]
    xml = to_cap(alert, zone_names={"th": "ลาน", "en": "Grounds"})
    ns = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
    info = ET.fromstring(xml).find("cap:info", ns)
    assert info is not None
    params = {p.findtext("cap:valueName", namespaces=ns): p.findtext("cap:value", namespaces=ns)
              for p in info.findall("cap:parameter", ns)}
    assert params["hot_cell"] == "r1c1"
    assert params["hot_cell_density_p_per_m2"] == "2.5"
    assert info.findtext("cap:certainty", namespaces=ns) == "Observed"


@pytest.mark.kernels
@pytest.mark.parametrize("seed", [1, 2])
def test_the_hotspot_scenario_fires_ahead_of_the_density_alarm_and_quiet_elsewhere(
        seed: int) -> None:
    import dataclasses  # noqa: PLC0415

    from agents.config import Settings  # noqa: PLC0415
    from agents.devtools.simulator import SCENARIOS, simulate  # noqa: PLC0415
    from benchmarks.detection import ZONES_FILE, replay_live  # noqa: PLC0415
    from benchmarks.lead_hotspot import false_hotspots, first_at  # noqa: PLC0415
    from schemas import load_zones  # noqa: PLC0415

    zones = load_zones(ZONES_FILE)
    settings = Settings.from_env({})
    cfg = settings.pipeline(zones).alerts.config
    out = simulate(SCENARIOS["wat-yai-hotspot"], zones, seed=seed, grace_s=settings.grace_s)
    on = replay_live(out, zones, cfg, settings)
    off = replay_live(out, [dataclasses.replace(z, grid=None) for z in zones], cfg, settings)
    truth = out.truth["zones"]["wat-yai-grounds"]
    hot_start = truth["hot"]["episodes"]["elevated"][0]["start_ms"]
    t_on = first_at(on.alerts, "wat-yai-grounds", "elevated")
    t_off = first_at(off.alerts, "wat-yai-grounds", "elevated")
    assert t_on is not None
    assert t_off is not None
    first = next(a for _, a in on.alerts if a["zone_id"] == "wat-yai-grounds")
    assert first["reason"] == "hotspot"
    assert first["hot_cell"] == "r3c2"
    assert 0 < t_on - hot_start < 120_000  # within two minutes of the true pocket
    assert t_off - t_on > 600_000  # ten minutes and more ahead of the density alarm
    assert not any(a["reason"] == "hotspot" for _, a in off.alerts)
    assert len({a["alert_id"] for _, a in on.alerts if a["zone_id"] == "wat-yai-grounds"}) == 1
    assert false_hotspots(on.alerts, out.truth) == 0
    for name in ("ordinary-evening", "wat-yai-fair"):
        other = simulate(SCENARIOS[name], zones, seed=seed, grace_s=settings.grace_s)
        run_ = replay_live(other, zones, cfg, settings)
        assert not any(a["reason"] == "hotspot" for _, a in run_.alerts), name


def test_the_worker_exports_the_hot_cell_density_gauge(tmp_path: object) -> None:
    from dataclasses import replace  # noqa: PLC0415

    from agents.config import Settings  # noqa: PLC0415
    from agents.metrics import Metrics  # noqa: PLC0415
    from agents.worker.worker import Worker  # noqa: PLC0415
    from streams.pipeline import Pipeline  # noqa: PLC0415
    from streams.records import Outputs, OutRecord, density_record  # noqa: PLC0415

    settings = replace(Settings.from_env({}), state_dir=tmp_path)
    metrics = Metrics()

    async def send_state(key: bytes, value: bytes | None) -> None:
        return None

    w = Worker(settings, Pipeline([ZONE]), metrics, producer=lambda: None,
               send_state=send_state, consumer=lambda: None, exit=lambda code: None,
               wall=lambda: 0.0, monotonic=lambda: 0.0)
    out = Outputs()
    out.density.append(OutRecord(b"g", density_record(upd(3, 0.3, 2.5)), []))
    w._count(out, settings.topics.sensor_events, None)
    got = metrics.registry.get_sample_value(
        "safetour_zone_hot_cell_density_persons_per_square_meter", {"zone": "g"})
    assert got == 2.5


STANDING = parse_zone({"zone_id": "g", "name": {"th": "ลาน", "en": "Grounds"}, "area_m2": 10000,
                       "crowd": "standing",
                       "grid": {"cell_m": 50, "origin": [16.0, 100.0], "rows": 2, "cols": 2},
                       "sensors": []})


def run_standing(series: list[tuple[float, float]]) -> list[tuple[int, dict[str, object]]]:
    t = AlertTracker({"g": STANDING})
    return [(i, a) for i, (m, h) in enumerate(series, 1) for a in t.observe(upd(i, m, h))]


def test_a_steady_pocket_with_the_mean_wobbling_at_the_ratio_is_one_episode() -> None:
    """The reviewer's flap: a cell steady at 2.2 p/m² (standing, elevated 2.0), the zone mean
    wobbling ±1.2 % around 1.76 (2.2 / 1.76 = 1.25) with a 2-minute period, 33 minutes: 16
    episodes without a keep ratio (the reviewer saw 17), one with it."""
    n = 33 * 60_000 // SLIDE
    wobble = [1.76 * (1 + 0.012 * math.sin(2 * math.pi * i * SLIDE / 120_000))
              for i in range(n)]
    assert min(wobble) < 2.2 / HOT_RATIO < max(wobble)
    assert max(wobble) * KEEP_RATIO < 2.2
    alerts = run_standing([(m, 2.2) for m in wobble])
    assert [(a["status"], a["level"], a["reason"]) for _, a in alerts] == [
        ("raised", "elevated", "hotspot")]


def test_a_pocket_the_mean_catches_up_to_below_the_keep_ratio_clears() -> None:
    """The keep ratio holds a pocket, not every cell: a cell at 2.05 (elevated 2.0), the
    mean rising from 1.6 to 2.05 / 1.14 (under the keep ratio, and under elevated's
    dead-band, 1.8) ends the episode after the off-delay."""
    mean = 2.05 / 1.14
    assert mean < STANDING_DEFAULTS.elevated * 0.9
    assert 2.05 / mean < KEEP_RATIO
    alerts = run_standing([(1.6, 2.05)] * 20 + [(mean, 2.05)] * 20)
    assert [(i, a["status"], a["reason"]) for i, a in alerts] == [
        (3, "raised", "hotspot"), (27, "resolved", "hotspot")]


def test_the_pocket_state_survives_a_snapshot() -> None:
    w = HotspotWatch.new(STANDING_DEFAULTS, AlarmConfig())
    for i in range(1, 6):
        w.observe("r1c1", 2.2, 1.7, i * SLIDE)
    assert w.pocket
    w2 = HotspotWatch.new(STANDING_DEFAULTS, AlarmConfig())
    w2.restore(w.export())
    assert w2.pocket
    # 2.2 / 1.85 = 1.19: under the raise ratio, over the keep ratio: held.
    assert w2.observe("r1c1", 2.2, 1.85, 6 * SLIDE) is Level.ELEVATED
    assert w2.pocket
    old = {k: v for k, v in w.export().items() if k != "pocket"}  # a snapshot from before
    w3 = HotspotWatch.new(STANDING_DEFAULTS, AlarmConfig())
    w3.restore(old)
    assert not w3.pocket
