"""Alert episodes from density updates.

An episode starts when a zone leaves ``normal`` and ends when it returns to it. Every change of
level inside an episode is one alert message with the episode's ``alert_id``:

    normal ──▶ raised ──▶ escalated / deescalated ... ──▶ resolved

``alert_id`` is derived from the zone and the event time at which the episode started, so the
same input replayed, or re-processed by a restarted worker, gives the same id.

This is the walking skeleton's policy (no on-delay or dead-band yet); the "Alerting" issue
replaces it with the full state machine behind the same ``observe`` call.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas import Thresholds, Zone, format_ts

from .engine import DensityUpdate
from .levels import Level, level_for, resolve_thresholds
from .messages import density_message


def episode_id(zone_id: str, start_ms: int) -> str:
    """Deterministic alert id: zone and the event time (ms) of the episode's start."""
    digest = hashlib.sha256(f"{zone_id}\x1f{start_ms}".encode()).hexdigest()[:20]
    return f"{zone_id}:{start_ms}:{digest}"


@dataclass(slots=True)
class _Episode:
    alert_id: str
    level: Level


class AlertTracker:
    """Turns density updates into alert dicts (alert.v1.json) for each change of level."""

    def __init__(self, zones: Mapping[str, Zone]) -> None:
        self._zones = dict(zones)
        self._thresholds: dict[str, Thresholds] = {}
        self._open: dict[str, _Episode] = {}

    def set_zones(self, zones: Mapping[str, Zone]) -> None:
        self._zones = dict(zones)
        self._thresholds.clear()

    def thresholds(self, zone_id: str) -> Thresholds:
        t = self._thresholds.get(zone_id)
        if t is None:
            z = self._zones[zone_id]
            t = self._thresholds[zone_id] = resolve_thresholds(z.crowd, z.thresholds)
        return t

    def export_state(self, zone_ids: Iterable[str]) -> dict[str, list[Any]]:
        """Open episodes of these zones, for a snapshot."""
        return {z: [ep.alert_id, int(ep.level)] for z in zone_ids
                if (ep := self._open.get(z)) is not None}

    def import_state(self, zone_ids: Iterable[str], state: Mapping[str, list[Any]]) -> None:
        """Replace these zones' episodes with a snapshot's (absent = no open episode)."""
        for z in zone_ids:
            self._open.pop(z, None)
            if z in state:
                alert_id, level = state[z]
                self._open[z] = _Episode(str(alert_id), Level(int(level)))

    def observe(self, u: DensityUpdate) -> dict[str, Any] | None:
        if u.zone_id not in self._zones or math.isnan(u.density):
            # No sensor reported in the window: the level is unknown, not normal. The zone
            # keeps its episode; a blind zone is reported through freshness, not resolved.
            return None
        level = level_for(u.density, self.thresholds(u.zone_id))
        ep = self._open.get(u.zone_id)
        if ep is None:
            if level is Level.NORMAL:
                return None
            ep = self._open[u.zone_id] = _Episode(episode_id(u.zone_id, u.window_end_ms), level)
            return self._alert(u, ep.alert_id, level, Level.NORMAL, "raised")
        if level == ep.level:
            return None
        previous = ep.level
        if level is Level.NORMAL:
            del self._open[u.zone_id]
            status = "resolved"
        else:
            status = "escalated" if level > previous else "deescalated"
            ep.level = level
        return self._alert(u, ep.alert_id, level, previous, status)

    def _alert(
        self, u: DensityUpdate, alert_id: str, level: Level, previous: Level, status: str
    ) -> dict[str, Any]:
        z = self._zones[u.zone_id]
        return {
            "alert_id": alert_id,
            "zone_id": u.zone_id,
            "level": level.wire,
            "previous_level": previous.wire,
            "status": status,
            "density": round(u.density, 4),
            "occupancy": round(u.occupancy, 2),
            "window_start": format_ts(u.window_start_ms),
            "window_end": format_ts(u.window_end_ms),
            "ts": format_ts(u.window_end_ms),
            "sensors": list(u.sensors),
            "trend": None if math.isnan(u.trend_per_min) else round(u.trend_per_min, 4),
            "message": density_message(
                name_th=z.name_th, name_en=z.name_en, level=level.wire, status=status,
                density=u.density, ts_ms=u.window_end_ms,
            ),
        }
