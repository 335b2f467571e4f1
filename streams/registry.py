"""Zone registry rules: what the engine needs of a zone, checked where the registry is read.

A zone that passes zone.v1 (``schemas.parse_zone``) can still be one the density engine or
the alarms cannot run: a slide shorter than the engine's, a window that is not a whole number
of slides, a partial ``thresholds`` override that no longer rises once merged with the crowd
type's defaults, a sensor listed in two zones, a polygon that crosses itself. These checks
refuse such a registry with one line naming the zone and the rule
(:class:`schemas.ZoneRegistryError`), before the engine ever sees it.

Pure: no I/O, no faust, no aiokafka.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from schemas import Kind, Thresholds, Zone, ZoneRegistryError, positive_number

from .density import DEFAULT_SLIDE_MS, DEFAULT_WINDOW_MS
from .levels import MOVING_DEFAULTS, STANDING_DEFAULTS

log = logging.getLogger(__name__)

Point = tuple[float, float]

# Largest window_s / slide_s taken (a year): beyond it the engine's millisecond arithmetic
# overflows long before it means anything.
MAX_WINDOW_S = 366 * 86400.0


@dataclass(frozen=True, slots=True)
class RegistryRules:
    """The engine's limits a zone must fit: its window and slide, the most slides a zone's
    window may hold, and the default thresholds a partial override is merged with."""

    window_ms: int = DEFAULT_WINDOW_MS
    slide_ms: int = DEFAULT_SLIDE_MS
    max_slides: int = DEFAULT_WINDOW_MS // DEFAULT_SLIDE_MS
    standing: Thresholds = STANDING_DEFAULTS
    moving: Thresholds = MOVING_DEFAULTS


def _fail(zone_id: str, what: str) -> None:
    raise ZoneRegistryError(f"zone {zone_id!r}: {what}")


_finite_pos = positive_number


def zone_slide_ms(zone: Zone, rules: RegistryRules) -> int:
    """The zone's slide in ms, computed as the engine computes it."""
    return int(float(zone.extra.get("slide_s", rules.slide_ms / 1000)) * 1000)  # type: ignore[arg-type]


def _check_windows(zone: Zone, rules: RegistryRules) -> None:
    zid = zone.zone_id
    for key in ("window_s", "slide_s"):
        v = zone.extra.get(key)
        if key in zone.extra and not (_finite_pos(v) and v <= MAX_WINDOW_S):  # type: ignore[operator]
            _fail(zid, f"{key} must be a number > 0 and <= {MAX_WINDOW_S:g}, got {v!r}")
    # Exactly the engine's arithmetic (streams/density.py), so what passes here runs there.
    slide = zone_slide_ms(zone, rules)
    window = int(float(zone.extra.get("window_s", rules.window_ms / 1000)) * 1000)  # type: ignore[arg-type]
    if slide < rules.slide_ms:
        _fail(zid, f"slide_s {slide / 1000:g} is shorter than the engine's slide "
                   f"({rules.slide_ms / 1000:g} s)")
    if window <= 0 or window % slide:
        _fail(zid, f"window_s {window / 1000:g} is not a whole number of slides "
                   f"(slide_s {slide / 1000:g})")
    if window // slide > rules.max_slides:
        _fail(zid, f"window_s {window / 1000:g} / slide_s {slide / 1000:g} is "
                   f"{window // slide} slides; at most {rules.max_slides}")


def effective_thresholds(zone: Zone, rules: RegistryRules) -> Thresholds:
    """The zone's thresholds as the alarms will use them (``streams.levels.resolve_thresholds``
    semantics: a 0 in the override means 'not set'), or ZoneRegistryError."""
    base = rules.standing if zone.crowd == "standing" else rules.moving
    o = zone.thresholds
    if o is None:
        return base
    for name, v in (("elevated", o.elevated), ("high", o.high), ("critical", o.critical)):
        if v != 0 and not _finite_pos(v):
            _fail(zone.zone_id, f"thresholds.{name} must be a number > 0, got {v!r}")
    t = Thresholds(o.elevated or base.elevated, o.high or base.high,
                   o.critical or base.critical)
    if not t.elevated < t.high < t.critical:
        _fail(zone.zone_id, f"thresholds must rise (elevated < high < critical) once merged "
                            f"with the {zone.crowd} defaults: got {t.elevated:g}, {t.high:g}, "
                            f"{t.critical:g}")
    return t


def _check_numbers(zone: Zone) -> None:
    zid = zone.zone_id
    if not _finite_pos(zone.area_m2):
        _fail(zid, f"area_m2 must be a finite number > 0, got {zone.area_m2!r}")
    seen: set[str] = set()
    for s in zone.sensors:
        if s.sensor_id in seen:
            _fail(zid, f"sensor {s.sensor_id!r} is listed twice")
        seen.add(s.sensor_id)
        for key, v in (("calibration", s.calibration), ("coverage_m2", s.coverage_m2),
                       ("width_m", s.width_m)):
            if v is not None and not _finite_pos(v):
                _fail(zid, f"sensor {s.sensor_id!r}: {key} must be a finite number > 0, "
                           f"got {v!r}")


# -- polygons -------------------------------------------------------------------------------
def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Point, a: Point, b: Point) -> bool:
    return (min(a[0], b[0]) <= p[0] <= max(a[0], b[0])
            and min(a[1], b[1]) <= p[1] <= max(a[1], b[1]))


def _segments_meet(a: Point, b: Point, c: Point, d: Point, eps: float) -> bool:
    """True if segment ab and segment cd share at least one point."""
    d1, d2 = _cross(c, d, a), _cross(c, d, b)
    d3, d4 = _cross(a, b, c), _cross(a, b, d)
    z1, z2, z3, z4 = (abs(x) <= eps for x in (d1, d2, d3, d4))
    if ((d1 > eps and d2 < -eps) or (d1 < -eps and d2 > eps)) and \
            ((d3 > eps and d4 < -eps) or (d3 < -eps and d4 > eps)):
        return True
    return ((z1 and _on_segment(a, c, d)) or (z2 and _on_segment(b, c, d))
            or (z3 and _on_segment(c, a, b)) or (z4 and _on_segment(d, a, b)))


MAX_POLYGON_POINTS = 1000
"""A zone's outline needs tens of points; the self-intersection test is O(n²), so a record
with a 20,000-point polygon would hold a worker's event loop for minutes."""
MIN_AREA_M2 = 1.0
"""Below a square metre any reading would read as a deadly density."""


def polygon_problem(polygon: Iterable[Point]) -> str | None:
    """Why ``polygon`` is not a simple polygon, or None. A closing point equal to the first
    and repeated consecutive points are allowed; O(n²) in the number of points (at most
    MAX_POLYGON_POINTS)."""
    pts: list[Point] = []
    for p in polygon:
        if len(pts) >= MAX_POLYGON_POINTS:
            return f"has more than {MAX_POLYGON_POINTS} points"
        if len(p) != 2 or not all(math.isfinite(c) for c in p):
            return f"point {list(p)!r} is not two finite numbers"
        if not pts or pts[-1] != p:
            pts.append((float(p[0]), float(p[1])))
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts.pop()
    n = len(pts)
    if n < 3:
        return f"needs at least 3 distinct points, has {n}"
    if len(set(pts)) != n:
        return "passes through the same point twice"
    span = max(max(p[0] for p in pts) - min(p[0] for p in pts),
               max(p[1] for p in pts) - min(p[1] for p in pts))
    eps = 1e-12 * span * span
    area2 = sum(pts[i][0] * pts[(i + 1) % n][1] - pts[(i + 1) % n][0] * pts[i][1]
                for i in range(n))
    if abs(area2) <= eps:
        return "has zero area (its points are on one line)"
    edges = [(pts[i], pts[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        a, b = edges[i]
        # Adjacent edges share a vertex; they must not fold back along each other.
        c = edges[(i + 1) % n][1]
        if abs(_cross(a, b, c)) <= eps and \
                (a[0] - b[0]) * (c[0] - b[0]) + (a[1] - b[1]) * (c[1] - b[1]) > 0:
            return f"folds back on itself at {list(b)!r}"
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # the last edge is adjacent to the first
            if _segments_meet(a, b, *edges[j], eps):
                return f"crosses itself (edges {i + 1} and {j + 1})"
    return None


def _check_area(zone: Zone) -> None:
    if zone.area_m2 < MIN_AREA_M2:
        _fail(zone.zone_id, f"area_m2 {zone.area_m2:g} is below {MIN_AREA_M2:g} m²")


def _check_polygon(zone: Zone) -> None:
    if zone.polygon is not None:
        problem = polygon_problem(zone.polygon)
        if problem is not None:
            _fail(zone.zone_id, f"polygon {problem}")


# -- the registry ---------------------------------------------------------------------------
def check_zone(zone: Zone, rules: RegistryRules) -> None:
    """The rules one zone must meet on its own; ZoneRegistryError names the first broken."""
    _check_numbers(zone)
    _check_windows(zone, rules)
    effective_thresholds(zone, rules)
    _check_area(zone)
    _check_polygon(zone)


def sensor_owners(zones: Iterable[Zone]) -> dict[str, str]:
    """sensor_id -> zone_id; ZoneRegistryError if a sensor is listed in two zones."""
    owners: dict[str, str] = {}
    for z in zones:
        for s in z.sensors:
            other = owners.setdefault(s.sensor_id, z.zone_id)
            if other != z.zone_id:
                _fail(z.zone_id, f"sensor {s.sensor_id!r} is already listed in zone "
                                 f"{other!r} (a sensor belongs to one zone)")
    return owners


def _check_neighbours(zone: Zone, registry: Mapping[str, Zone], *, strict: bool) -> None:
    """``zone``'s neighbours: not itself, each once, known (``strict``: a live update may
    name a zone that comes later, and is then skipped), and each boundary counter a
    line_count sensor of this zone or of the neighbour, listed once."""
    zid = zone.zone_id
    seen: set[str] = set()
    for n in zone.neighbours:
        if n.zone_id == zid:
            _fail(zid, "lists itself as a neighbour")
        if n.zone_id in seen:
            _fail(zid, f"neighbour {n.zone_id!r} is listed twice")
        seen.add(n.zone_id)
        other = registry.get(n.zone_id)
        if other is None:
            if strict:
                _fail(zid, f"neighbour {n.zone_id!r} is not a zone of the registry")
            continue
        counters: set[str] = set()
        for c in n.counters:
            if c.sensor_id in counters:
                _fail(zid, f"neighbour {n.zone_id!r}: counter {c.sensor_id!r} is listed twice")
            counters.add(c.sensor_id)
            kinds = {s.kind for z in (zone, other) for s in z.sensors
                     if s.sensor_id == c.sensor_id}
            if not kinds:
                _fail(zid, f"neighbour {n.zone_id!r}: counter {c.sensor_id!r} is not a sensor "
                           f"of {zid!r} or {n.zone_id!r}")
            if kinds != {Kind.LINE_COUNT}:
                _fail(zid, f"neighbour {n.zone_id!r}: counter {c.sensor_id!r} is not a "
                           f"line_count sensor")


def neighbour_warnings(zones: Iterable[Zone]) -> list[str]:
    """Zone-graph oddities that do not stop a registry: a neighbour that does not list the
    zone back, or a boundary counter whose direction both zones read the same way."""
    by_id = {z.zone_id: z for z in zones}
    out = []
    for z in by_id.values():
        for n in z.neighbours:
            other = by_id.get(n.zone_id)
            if other is None:
                continue
            back = next((m for m in other.neighbours if m.zone_id == z.zone_id), None)
            if back is None:
                out.append(f"zone {z.zone_id!r}: neighbour {n.zone_id!r} does not list it "
                           f"back (the zone graph is not symmetric)")
                continue
            theirs = {c.sensor_id: c.into for c in back.counters}
            for c in n.counters:
                if theirs.get(c.sensor_id) == c.into and z.zone_id < n.zone_id:
                    out.append(f"zones {z.zone_id!r} and {n.zone_id!r} both read counter "
                               f"{c.sensor_id!r} {c.into} as flow into themselves")
    return out


def check_zones(zones: Iterable[Zone], rules: RegistryRules) -> None:
    """Check a whole registry: every zone's own rules, sensor ids unique across zones, the
    zone graph (neighbours known, boundary counters line counters of either zone); its
    asymmetries are logged as warnings (:func:`neighbour_warnings`)."""
    zone_list = list(zones)
    for z in zone_list:
        check_zone(z, rules)
    sensor_owners(zone_list)
    by_id = {z.zone_id: z for z in zone_list}
    for z in zone_list:
        _check_neighbours(z, by_id, strict=True)
    for w in neighbour_warnings(zone_list):
        log.warning("zone registry: %s", w)


def check_zone_update(
    current: Mapping[str, Zone], new_zone: Zone, rules: RegistryRules,
    owners: Mapping[str, str] | None = None,
) -> None:
    """Check the registry as it would be once ``new_zone`` replaces (or joins) ``current``:
    the zone's own rules, its sensors not listed in any other zone, and its slide unchanged
    (the engine cannot change a running zone's slide). ``owners`` is
    :func:`sensor_owners` of ``current`` when the caller keeps it (saves O(registry) work)."""
    check_zone(new_zone, rules)
    zid = new_zone.zone_id
    old = current.get(zid)
    if old is not None and zone_slide_ms(old, rules) != zone_slide_ms(new_zone, rules):
        _fail(zid, f"slide_s cannot change while the registry is live "
                   f"({zone_slide_ms(old, rules) / 1000:g} s -> "
                   f"{zone_slide_ms(new_zone, rules) / 1000:g} s)")
    if owners is None:
        owners = sensor_owners(z for k, z in current.items() if k != zid)
    for s in new_zone.sensors:
        other = owners.get(s.sensor_id)
        if other is not None and other != zid:
            _fail(zid, f"sensor {s.sensor_id!r} is already listed in zone {other!r} "
                       f"(a sensor belongs to one zone)")
    if new_zone.neighbours:
        _check_neighbours(new_zone, {**current, zid: new_zone}, strict=False)
