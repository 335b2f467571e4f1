"""Zone registry: load and validate zones from a JSON/YAML file or a zones-topic record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml

from ._errors import ZoneRegistryError
from ._records import (
    KIND_BY_WIRE,
    BoundaryCounter,
    Grid,
    Neighbour,
    SensorSpec,
    Thresholds,
    Zone,
)
from ._validate import positive_number


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ZoneRegistryError(f"{where}: {what}")


_pos_num = positive_number


def _name_str(v: object) -> bool:
    return isinstance(v, str) and 1 <= len(v) <= 200


def parse_zone(doc: object, where: str = "zone") -> Zone:
    """Validate one zone object (zone.v1.json) and return it as a :class:`Zone`."""
    _need(isinstance(doc, Mapping), where, "must be an object")
    assert isinstance(doc, Mapping)
    for key in ("zone_id", "name", "area_m2", "crowd", "sensors"):
        _need(key in doc, where, f"missing required field {key!r}")
    zone_id = doc["zone_id"]
    _need(isinstance(zone_id, str) and 1 <= len(zone_id) <= 64, where, "zone_id: 1..64 chars")
    where = f"zone {zone_id!r}"
    name = doc["name"]
    _need(
        isinstance(name, Mapping) and _name_str(name.get("th")) and _name_str(name.get("en")),
        where,
        "name needs 'th' and 'en' strings (1..200 chars)",
    )
    _need(_pos_num(doc["area_m2"]), where, "area_m2 must be a finite number > 0")
    crowd = doc["crowd"]
    _need(crowd in ("standing", "moving"), where, "crowd must be 'standing' or 'moving'")
    capacity = doc.get("capacity")
    _need(
        capacity is None or (isinstance(capacity, int) and not isinstance(capacity, bool)
                             and capacity >= 1),
        where, "capacity must be an integer >= 1",
    )
    polygon: tuple[tuple[float, float], ...] | None = None
    if doc.get("polygon") is not None:
        raw = doc["polygon"]
        _need(isinstance(raw, list) and len(raw) >= 3, where, "polygon needs >= 3 [lat, lon]")
        pts = []
        for p in raw:
            ok = (
                isinstance(p, list | tuple) and len(p) == 2
                and all(isinstance(c, int | float) and not isinstance(c, bool) for c in p)
                and -90 <= p[0] <= 90 and -180 <= p[1] <= 180
            )
            _need(ok, where, f"polygon point {p!r} is not [lat, lon]")
            pts.append((float(p[0]), float(p[1])))
        polygon = tuple(pts)
    thresholds = None
    if doc.get("thresholds") is not None:
        t = doc["thresholds"]
        _need(isinstance(t, Mapping) and set(t) <= {"elevated", "high", "critical"}, where,
              "thresholds takes only elevated, high, critical")
        assert isinstance(t, Mapping)
        _need(all(_pos_num(v) for v in t.values()), where, "thresholds must be finite numbers > 0")
        thresholds = _thresholds_from(t)
    sensors = []
    raw_sensors = doc["sensors"]
    _need(isinstance(raw_sensors, list), where, "sensors must be a list")
    for s in raw_sensors:
        _need(isinstance(s, Mapping) and isinstance(s.get("sensor_id"), str)
              and 1 <= len(s["sensor_id"]) <= 128, where, f"sensor {s!r} needs a sensor_id")
        kind = KIND_BY_WIRE.get(s.get("kind")) if isinstance(s.get("kind"), str) else None
        _need(kind is not None, where, f"sensor {s.get('sensor_id')!r}: unknown kind")
        assert kind is not None
        for key in ("calibration", "coverage_m2", "width_m"):
            _need(s.get(key) is None or _pos_num(s[key]), where,
                  f"sensor {s['sensor_id']!r}: {key} must be a finite number > 0")
        sensors.append(SensorSpec(
            s["sensor_id"], kind,
            None if s.get("calibration") is None else float(s["calibration"]),
            None if s.get("coverage_m2") is None else float(s["coverage_m2"]),
            None if s.get("width_m") is None else float(s["width_m"]),
        ))
    grid = None if doc.get("grid") is None else _grid(doc["grid"], where)
    neighbours = _neighbours_from(doc.get("neighbours", []), where)
    known = {"zone_id", "name", "area_m2", "crowd", "capacity", "polygon", "thresholds",
             "sensors", "area_estimated", "grid", "neighbours"}
    return Zone(
        zone_id=zone_id,
        name_th=name["th"],
        name_en=name["en"],
        area_m2=float(doc["area_m2"]),
        crowd=crowd,
        sensors=tuple(sensors),
        capacity=capacity,
        polygon=polygon,
        thresholds=thresholds,
        area_estimated=bool(doc.get("area_estimated", False)),
        extra={k: v for k, v in doc.items() if k not in known},
        grid=grid,
        neighbours=neighbours,
    )


def zone_document(z: Zone) -> dict[str, Any]:
    """A :class:`Zone` as its zone.v1 JSON object: :func:`parse_zone` of it gives ``z`` back
    (every field: grid, neighbours, line counters' widths, the unknown fields kept in
    ``extra``)."""
    sensors = []
    for s in z.sensors:
        d: dict[str, Any] = {"sensor_id": s.sensor_id, "kind": s.kind.wire}
        for key, v in (("calibration", s.calibration), ("coverage_m2", s.coverage_m2),
                       ("width_m", s.width_m)):
            if v is not None:
                d[key] = v
        sensors.append(d)
    doc: dict[str, Any] = {
        "zone_id": z.zone_id, "name": {"th": z.name_th, "en": z.name_en},
        "area_m2": z.area_m2, "area_estimated": z.area_estimated, "crowd": z.crowd,
        "sensors": sensors,
    }
    if z.capacity is not None:
        doc["capacity"] = z.capacity
    if z.polygon is not None:
        doc["polygon"] = [list(p) for p in z.polygon]
    if z.thresholds is not None:
        t = z.thresholds
        doc["thresholds"] = {k: v for k, v in (("elevated", t.elevated), ("high", t.high),
                                               ("critical", t.critical)) if v}
    if z.grid is not None:
        g = z.grid
        doc["grid"] = {"cell_m": g.cell_m, "origin": list(g.origin), "rows": g.rows,
                       "cols": g.cols}
    if z.neighbours:
        doc["neighbours"] = [
            {"zone_id": n.zone_id,
             "counters": [{"sensor_id": c.sensor_id, "into": c.into} for c in n.counters]}
            for n in z.neighbours]
    return doc | z.extra


MAX_GRID_CELLS = 4096


def _grid(g: object, where: str) -> Grid:
    """``grid: {cell_m, origin: [lat, lon], rows, cols}`` (zone.v1.json)."""
    _need(isinstance(g, Mapping) and set(g) == {"cell_m", "origin", "rows", "cols"}, where,
          "grid takes exactly cell_m, origin, rows, cols")
    assert isinstance(g, Mapping)
    cell = g["cell_m"]
    _need(_pos_num(cell) and 5 <= cell <= 1000, where, "grid cell_m must be in 5..1000 m")
    o = g["origin"]
    _need(isinstance(o, list | tuple) and len(o) == 2
          and all(isinstance(c, int | float) and not isinstance(c, bool) for c in o)
          and -90 <= o[0] <= 90 and -180 <= o[1] <= 180, where,
          f"grid origin {o!r} is not [lat, lon]")
    rows, cols = g["rows"], g["cols"]
    for name, v in (("rows", rows), ("cols", cols)):
        _need(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000, where,
              f"grid {name} must be an integer in 1..1000")
    _need(rows * cols <= MAX_GRID_CELLS, where, f"grid has more than {MAX_GRID_CELLS} cells")
    return Grid(float(cell), (float(o[0]), float(o[1])), rows, cols)


MAX_NEIGHBOURS = 32
MAX_BOUNDARY_COUNTERS = 32


def _neighbours_from(raw: object, where: str) -> tuple[Neighbour, ...]:
    """The optional ``neighbours`` list (zone.v1.json): adjacent zones and the line counters
    on the shared boundary. Whether the zones and counters exist is a registry rule
    (streams/registry.py), checked where the whole registry is known."""
    _need(isinstance(raw, list) and len(raw) <= MAX_NEIGHBOURS, where,
          f"neighbours must be a list of at most {MAX_NEIGHBOURS}")
    assert isinstance(raw, list)
    out = []
    for n in raw:
        _need(isinstance(n, Mapping) and set(n) <= {"zone_id", "counters"}
              and isinstance(n.get("zone_id"), str) and 1 <= len(n["zone_id"]) <= 64,
              where, f"neighbour {n!r} needs a zone_id (1..64 chars) and only counters")
        assert isinstance(n, Mapping)
        counters = n.get("counters", [])
        _need(isinstance(counters, list) and len(counters) <= MAX_BOUNDARY_COUNTERS, where,
              f"neighbour {n['zone_id']!r}: counters must be a list of at most "
              f"{MAX_BOUNDARY_COUNTERS}")
        cs = []
        for c in counters:
            _need(isinstance(c, Mapping) and set(c) == {"sensor_id", "into"}
                  and isinstance(c["sensor_id"], str) and 1 <= len(c["sensor_id"]) <= 128
                  and c["into"] in ("entries", "exits"), where,
                  f"neighbour {n['zone_id']!r}: counter {c!r} needs a sensor_id and "
                  f"into: entries or exits")
            cs.append(BoundaryCounter(c["sensor_id"], c["into"]))
        out.append(Neighbour(n["zone_id"], tuple(cs)))
    return tuple(out)


def _thresholds_from(t: Mapping[str, Any]) -> Thresholds | None:
    if not {"elevated", "high", "critical"} <= set(t):
        # A partial override is completed from the crowd type's defaults by the caller.
        return Thresholds(
            float(t.get("elevated", 0.0)), float(t.get("high", 0.0)), float(t.get("critical", 0.0))
        )
    return Thresholds(float(t["elevated"]), float(t["high"]), float(t["critical"]))


def parse_zones(docs: Iterable[object]) -> list[Zone]:
    """Validate a list of zone objects; zone ids must be unique."""
    zones = [parse_zone(d, f"zone #{i}") for i, d in enumerate(docs)]
    seen: set[str] = set()
    for z in zones:
        _need(z.zone_id not in seen, f"zone {z.zone_id!r}", "zone_id appears twice")
        seen.add(z.zone_id)
    return zones


def load_zones(path: str | Path) -> list[Zone]:
    """Load a zone registry file (``.json``, ``.yaml`` or ``.yml``): a list of zones, or a
    mapping with a ``zones`` list."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ZoneRegistryError(f"cannot read zone registry {p}: {exc.strerror}") from exc
    try:
        doc = orjson.loads(raw) if p.suffix == ".json" else yaml.safe_load(raw)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        why = " ".join(str(exc).split())  # one line: YAML's messages span several
        raise ZoneRegistryError(f"{p}: not valid {p.suffix.lstrip('.').upper()}: {why}") from exc
    if isinstance(doc, Mapping) and "zones" in doc:
        doc = doc["zones"]
    _need(isinstance(doc, list), str(p), "must hold a list of zones (or {zones: [...]})")
    assert isinstance(doc, list)
    try:
        return parse_zones(doc)
    except ZoneRegistryError as exc:
        raise ZoneRegistryError(f"{p}: {exc}") from None
