"""Registry rules (streams/registry.py): a zone that passes zone.v1 but that the engine or the
alarms could not run is refused where the registry is read, with one line naming the zone."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agents.config import Settings
from schemas import Kind, SensorSpec, Thresholds, Zone, ZoneRegistryError, load_zones
from streams import LEVEL_NAMES, Level, level_rank
from streams.registry import (
    RegistryRules,
    check_zone_update,
    check_zones,
    effective_thresholds,
    polygon_problem,
)

REPO = Path(__file__).resolve().parents[2]
RULES = RegistryRules()  # the engine defaults: 60 s windows, 5 s slides, at most 12 slides
SQUARE = ((16.80, 100.26), (16.80, 100.27), (16.81, 100.27), (16.81, 100.26))


def zone(zone_id: str = "a", *sensors: str, **kw: Any) -> Zone:
    extra = kw.pop("extra", {})
    z = Zone(zone_id, "ก", "A", kw.pop("area_m2", 100.0), kw.pop("crowd", "standing"),
             tuple(SensorSpec(s, Kind.OCCUPANCY) for s in sensors), **kw)
    z.extra.update(extra)
    return z


def refused(zones: list[Zone], match: str, rules: RegistryRules = RULES) -> str:
    with pytest.raises(ZoneRegistryError, match=match) as exc:
        check_zones(zones, rules)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_the_demo_registry_meets_the_rules_of_the_default_and_the_test_settings() -> None:
    zones = load_zones(REPO / "deploy/zones/phitsanulok.yaml")
    check_zones(zones, RULES)
    check_zones(zones, RegistryRules(window_ms=10_000, slide_ms=1000, max_slides=10))


@pytest.mark.parametrize(("extra", "match"), [
    ({"slide_s": 7}, r"zone 'a': window_s 60 is not a whole number of slides \(slide_s 7\)"),
    ({"slide_s": 3}, r"zone 'a': slide_s 3 is shorter than the engine's slide \(5 s\)"),
    ({"window_s": 62}, "window_s 62 is not a whole number of slides"),
    ({"window_s": 120}, "24 slides; at most 12"),
    ({"window_s": 0.0001}, "window_s 0 is not a whole number"),
    ({"slide_s": "10"}, "slide_s must be a number > 0"),
    ({"window_s": True}, "window_s must be a number > 0"),
    ({"window_s": -60}, "window_s must be a number > 0"),
    ({"slide_s": math.nan}, "slide_s must be a number > 0"),
    ({"window_s": math.inf}, "window_s must be a number > 0"),
    ({"window_s": 1e306, "slide_s": 1e305}, "window_s must be a number > 0"),
])
def test_windows_the_engine_cannot_run_are_refused(extra: dict[str, object], match: str) -> None:
    refused([zone(extra=extra)], match)


@pytest.mark.parametrize("extra", [{}, {"slide_s": 10}, {"window_s": 30, "slide_s": 10},
                                   {"window_s": 60.0, "slide_s": 5.0}])
def test_windows_the_engine_runs_pass(extra: dict[str, object]) -> None:
    check_zones([zone(extra=extra)], RULES)


def test_what_passes_the_window_rules_the_engine_accepts_and_the_rest_it_refuses() -> None:
    # The rules are the engine's own, not a copy that may drift: compare on a grid.
    s = Settings.from_env({})
    rules = s.registry_rules()
    for window_s in (5, 7, 10, 12.5, 30, 60, 61, 65, 120):
        for slide_s in (1, 2.5, 4, 5, 6, 7, 10, 15, 30):
            z = zone(extra={"window_s": window_s, "slide_s": slide_s})
            try:
                check_zones([z], rules)
                ok = True
            except ZoneRegistryError:
                ok = False
            try:
                s.density_engine([z])
                engine_ok = True
            except ValueError:
                engine_ok = False
            assert ok == engine_ok, (window_s, slide_s)


def test_settings_rules_match_the_engine_and_the_alarm_defaults() -> None:
    s = Settings.from_env({"SAFETOUR_WINDOW_S": "10", "SAFETOUR_SLIDE_S": "1",
                           "SAFETOUR_STANDING_LEVELS": "1,2,3"})
    rules, engine = s.registry_rules(), s.density_engine([])
    assert (rules.window_ms, rules.slide_ms, rules.max_slides) == (
        engine.window_ms, engine.slide_ms, engine.max_k)
    assert rules.standing == Thresholds(1.0, 2.0, 3.0) == s.pipeline([]).alerts.config.standing
    assert rules.moving == s.pipeline([]).alerts.config.moving


def test_a_partial_threshold_override_must_still_rise_once_merged() -> None:
    # critical 3 alone: standing defaults give 2.0 < 3.5 < 3 -- not rising.
    msg = refused([zone(thresholds=Thresholds(0.0, 0.0, 3.0))], "must rise")
    assert msg.startswith("zone 'a': thresholds")
    assert "2, 3.5, 3" in msg
    # The same override on a moving crowd (1.08 < 2.17 < 3) is fine ...
    check_zones([zone(thresholds=Thresholds(0.0, 0.0, 3.0), crowd="moving")], RULES)
    assert effective_thresholds(zone(thresholds=Thresholds(0.0, 0.0, 4.0)), RULES) == \
        Thresholds(2.0, 3.5, 4.0)
    # ... and the defaults are the configured ones, not the built-in ones.
    refused([zone(thresholds=Thresholds(0.0, 0.0, 4.0))], "must rise",
            replace(RULES, standing=Thresholds(2.0, 4.5, 6.0)))
    refused([zone(thresholds=Thresholds(3.0, 2.0, 4.0))], "must rise")
    refused([zone(thresholds=Thresholds(0.0, math.nan, 0.0))], "thresholds.high")


def test_a_sensor_listed_in_two_zones_is_refused_naming_both() -> None:
    msg = refused([zone("a", "cam-1"), zone("b", "cam-2"), zone("c", "cam-1")],
                  "sensor 'cam-1'")
    assert msg == ("zone 'c': sensor 'cam-1' is already listed in zone 'a' "
                   "(a sensor belongs to one zone)")
    refused([zone("a", "cam-1", "cam-1")], "zone 'a': sensor 'cam-1' is listed twice")


@pytest.mark.parametrize(("kw", "match"), [
    ({"area_m2": math.nan}, "area_m2 must be a finite number > 0, got nan"),
    ({"area_m2": math.inf}, "area_m2 must be a finite number > 0, got inf"),
    ({"area_m2": 0.0}, "area_m2"),
])
def test_areas_must_be_finite_and_positive(kw: dict[str, Any], match: str) -> None:
    refused([zone(**kw)], match)


def test_coverage_and_calibration_must_be_finite_and_positive() -> None:
    z = zone()
    for spec in (SensorSpec("s", Kind.OCCUPANCY, coverage_m2=math.inf),
                 SensorSpec("s", Kind.DEVICE_COUNT, calibration=math.nan)):
        refused([replace(z, sensors=(spec,))], "sensor 's': .* must be a finite number > 0")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e400"])
@pytest.mark.parametrize("field", ["area_m2", "coverage", "threshold"])
def test_zone_v1_refuses_nan_and_inf_from_yaml(tmp_path: Path, value: str, field: str) -> None:
    # YAML spells NaN and infinity; `nan > 0` is False but `inf > 0` is True.
    area = value if field == "area_m2" else "100"
    cov = f", coverage_m2: {value}" if field == "coverage" else ""
    thr = f", thresholds: {{critical: {value}}}" if field == "threshold" else ""
    f = tmp_path / "zones.yaml"
    f.write_text(f"- {{zone_id: a, name: {{th: ก, en: A}}, area_m2: {area}, crowd: standing"
                 f"{thr}, sensors: [{{sensor_id: s, kind: occupancy{cov}}}]}}\n")
    with pytest.raises(ZoneRegistryError, match=f"^{f}: zone 'a': .*finite number"):
        load_zones(f)


@pytest.mark.parametrize(("polygon", "match"), [
    (((16.8, 100.26), (16.8, 100.27), (16.8, 100.28)), "zero area"),
    (((16.8, 100.26), (16.81, 100.27), (16.8, 100.26)), "at least 3 distinct points, has 2"),
    (((16.8, 100.26), (16.8, 100.26), (16.8, 100.26), (16.8, 100.26)), "at least 3"),
    # An hourglass: the second and fourth edges cross.
    (((16.80, 100.26), (16.81, 100.28), (16.81, 100.26), (16.80, 100.27)), "crosses itself"),
    # A vertex touching another edge, and an edge doubling back along the previous one.
    (((16.80, 100.26), (16.80, 100.28), (16.81, 100.28), (16.80, 100.27), (16.81, 100.26)),
     "crosses itself"),
    (((16.80, 100.26), (16.80, 100.28), (16.80, 100.27), (16.81, 100.27)), "folds back"),
    (((16.80, 100.26), (16.81, 100.27), (16.80, 100.28), (16.81, 100.27), (16.82, 100.26)),
     "same point twice"),
    (((16.80, 100.26), (16.80, math.nan), (16.81, 100.27)), "finite"),
])
def test_degenerate_and_self_intersecting_polygons_are_refused(
    polygon: tuple[tuple[float, float], ...], match: str
) -> None:
    msg = refused([zone(polygon=polygon)], match)
    assert msg.startswith("zone 'a': polygon ")


def test_simple_polygons_pass_closed_or_open_with_repeated_points() -> None:
    assert polygon_problem(SQUARE) is None
    assert polygon_problem((*SQUARE, SQUARE[0])) is None  # a closing point equal to the first
    assert polygon_problem((SQUARE[0], *SQUARE)) is None  # a point repeated in place
    concave = ((0.0, 0.0), (0.0, 4.0), (2.0, 2.0), (4.0, 4.0), (4.0, 0.0))
    assert polygon_problem(concave) is None
    assert polygon_problem(((0.0, 0.0), (0.0, 1.0), (0.0, 2.0), (1.0, 1.0))) is None  # collinear


def test_an_update_is_checked_against_the_rest_of_the_registry() -> None:
    current = {"a": zone("a", "cam-1"), "b": zone("b", "cam-2")}
    check_zone_update(current, zone("a", "cam-1", "cam-3"), RULES)  # its own sensor again
    check_zone_update(current, zone("c", "cam-4"), RULES)  # a new zone
    with pytest.raises(ZoneRegistryError, match="zone 'c': sensor 'cam-2' is already listed "
                                                "in zone 'b'"):
        check_zone_update(current, zone("c", "cam-2"), RULES)
    with pytest.raises(ZoneRegistryError, match="slide_s cannot change"):
        check_zone_update(current, zone("a", "cam-1", extra={"slide_s": 10}), RULES)
    with pytest.raises(ZoneRegistryError, match="zone 'b': window_s 60 is not a whole"):
        check_zone_update(current, zone("b", "cam-2", extra={"slide_s": 7}), RULES)
    with pytest.raises(ZoneRegistryError, match="must rise"):
        check_zone_update(current, zone("d", thresholds=Thresholds(0.0, 9.0, 0.0)), RULES)


def test_a_bad_registry_file_names_the_file_the_zone_and_the_rule(tmp_path: Path) -> None:
    f = tmp_path / "zones.yaml"
    f.write_text("- {zone_id: a, name: {th: ก, en: A}, area_m2: 100, crowd: standing,"
                 " slide_s: 7, sensors: []}\n")
    with pytest.raises(ZoneRegistryError) as exc:
        Settings.from_env({}).load_registry(f)
    assert str(exc.value) == (f"{f}: zone 'a': window_s 60 is not a whole number of slides "
                              "(slide_s 7)")
    f.write_text("[unclosed\n  - x")
    with pytest.raises(ZoneRegistryError) as exc:
        Settings.from_env({"SAFETOUR_ZONES": str(f)}).load_registry()
    assert str(exc.value).startswith(f"{f}: not valid YAML")
    assert "\n" not in str(exc.value)


def test_one_level_order_for_every_package() -> None:
    assert LEVEL_NAMES == ("normal", "elevated", "high", "critical")
    assert [level_rank(n) for n in LEVEL_NAMES] == [int(lv) for lv in Level]
    assert level_rank("CRITICAL") == level_rank("bogus") == -1
