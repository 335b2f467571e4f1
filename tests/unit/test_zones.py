"""Zone registry files: the shipped demo registry loads; mistakes are reported clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas import Kind, Thresholds, ZoneRegistryError, load_zones
from streams import MOVING_DEFAULTS, STANDING_DEFAULTS, resolve_thresholds

REPO = Path(__file__).resolve().parents[2]


def test_demo_registry_loads_with_all_sensor_kinds() -> None:
    zones = load_zones(REPO / "deploy/zones/phitsanulok.yaml")
    ids = {z.zone_id for z in zones}
    assert {"wat-yai-vihara", "naresuan-bridge", "station-forecourt"} <= ids
    kinds = {s.kind for z in zones for s in z.sensors}
    assert kinds == set(Kind)
    assert all(z.area_estimated for z in zones)  # demo areas are estimates, and say so


@pytest.mark.parametrize(("body", "message"), [
    ("zones: 5", "must hold a list"),
    ("- {zone_id: a, name: {th: ก, en: A}, area_m2: 0, crowd: standing, sensors: []}",
     "area_m2"),
    ("- {zone_id: a, name: {th: ก, en: A}, area_m2: 5, crowd: sitting, sensors: []}", "crowd"),
    ("- {zone_id: a, name: {th: ก}, area_m2: 5, crowd: moving, sensors: []}", "name"),
    ("- {zone_id: a, name: {th: ก, en: A}, area_m2: 5, crowd: moving, sensors: [{sensor_id: s,"
     " kind: radar}]}", "unknown kind"),
    ("- {zone_id: a, name: {th: ก, en: A}, area_m2: 5, crowd: moving, sensors: []}\n"
     "- {zone_id: a, name: {th: ก, en: A}, area_m2: 5, crowd: moving, sensors: []}", "twice"),
    ("[unclosed", "not valid YAML"),
])
def test_bad_registry_is_rejected_with_reason(tmp_path: Path, body: str, message: str) -> None:
    f = tmp_path / "zones.yaml"
    f.write_text(body)
    with pytest.raises(ZoneRegistryError, match=message):
        load_zones(f)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ZoneRegistryError, match="cannot read zone registry"):
        load_zones(tmp_path / "nope.yaml")


def test_thresholds_default_by_crowd_type_and_override_per_zone() -> None:
    assert resolve_thresholds("standing", None) == STANDING_DEFAULTS
    assert resolve_thresholds("moving", None) == MOVING_DEFAULTS
    t = resolve_thresholds("standing", Thresholds(0.0, 0.0, 4.0))
    assert (t.elevated, t.high, t.critical) == (2.0, 3.5, 4.0)
    with pytest.raises(ValueError, match="must rise"):
        resolve_thresholds("standing", Thresholds(0.0, 0.0, 3.0))


def test_every_demo_zone_has_a_polygon_and_they_do_not_overlap() -> None:
    from streams.alerts import point_in_polygon  # noqa: PLC0415

    zones = load_zones(REPO / "deploy/zones/phitsanulok.yaml")
    assert all(z.polygon and len(z.polygon) >= 3 for z in zones)
    for z in zones:
        assert z.polygon is not None
        lat = sum(p[0] for p in z.polygon) / len(z.polygon)
        lon = sum(p[1] for p in z.polygon) / len(z.polygon)
        inside = [o.zone_id for o in zones if o.polygon and point_in_polygon(lat, lon, o.polygon)]
        # Wat Yai's vihara stands inside its grounds; every other centre is in one zone only.
        assert z.zone_id in inside
        assert len(inside) == 1 or set(inside) == {"wat-yai-vihara", "wat-yai-grounds"}
