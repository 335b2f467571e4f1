"""Hot spots: the densest grid cell of a zone judged with the zone's own levels.

A zone with a grid (``streams/grid.py``) gets, per density window, its densest cell. The
cell's density goes through an alarm of its own (:class:`HotspotWatch`: a
:class:`~streams.alarm.ZoneAlarm` with the zone's thresholds and the same on-delay,
dead-band and off-delay; no forecast, no rising edge), and the level it holds is offered to
the zone's alarm, which raises ``reason: hotspot`` when that level is above what the zone
mean reaches (``ZoneAlarm.observe(hot=...)``). A hot spot may raise up to ``critical``: a
pocket at 5 p/m² is a crush wherever the rest of the zone stands.

A pocket, not the unevenness of a crowd: the cell must also be at least ``HOT_RATIO``
(1.25) times the zone mean, else it counts as the mean's level (a grid and the zone's other
sensors disagree by more than a few percent: a cell a bit above the mean is no pocket).
Once a pocket, it stays one down to ``KEEP_RATIO`` (1.15) times the mean: hysteresis on
the ratio, as the dead-band is on the level, so a steady cell with the mean wobbling a
percent around ``cell / 1.25`` is one episode, not one per wobble (issue 16). A
window without grid readings counts as an empty cell: a silent grid lets the hot spot
clear after the off-delay (the zone's own sensors still judge the mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from schemas import Thresholds

from .alarm import AlarmConfig, ZoneAlarm
from .levels import Level

HOT_RATIO = 1.25
"""A cell becomes a pocket at this many times the zone mean or more."""
KEEP_RATIO = 1.15
"""A pocket stays one down to this many times the zone mean (hysteresis on the ratio)."""


@dataclass(slots=True)
class HotspotWatch:
    """The alarm of one zone's densest cell."""

    alarm: ZoneAlarm
    ratio: float = HOT_RATIO
    keep: float = KEEP_RATIO
    pocket: bool = False  # the cell is a pocket (raised at ``ratio``, kept to ``keep``)
    cell: str | None = None  # the densest cell of the newest window
    density: float = math.nan  # ... and its density

    @classmethod
    def new(cls, thresholds: Thresholds, config: AlarmConfig) -> HotspotWatch:
        cfg = replace(config, rising_edge=False, robust_forecast=False, forecast_hold=False)
        return cls(ZoneAlarm(thresholds, cfg))

    def observe(self, cell: str | None, density: float, mean: float, ts_ms: int) -> Level:
        """One window: its densest cell and density, the zone mean; the level the hot spot
        holds now."""
        self.cell, self.density = cell, density
        d = 0.0 if math.isnan(density) else density
        if not math.isnan(mean):
            self.pocket = d >= (self.keep if self.pocket else self.ratio) * mean
            if not self.pocket:
                d = min(d, mean)  # no pocket: the cell says what the mean says
        self.alarm.observe(d, math.nan, ts_ms)
        return self.alarm.level

    def export(self) -> dict[str, Any]:
        a = self.alarm
        return {"level": int(a.level), "up_since": {str(k): v for k, v in a.up_since.items()},
                "down_since": a.down_since, "episode_start_ms": a.episode_start_ms,
                "seq": a.seq, "pocket": self.pocket}

    def restore(self, s: dict[str, Any]) -> None:
        a = self.alarm
        a.level = Level(int(s["level"]))
        a.up_since = {int(k): int(v) for k, v in s["up_since"].items()}
        a.down_since = s["down_since"]
        a.episode_start_ms = s["episode_start_ms"]
        a.seq = int(s["seq"])
        self.pocket = bool(s.get("pocket", False))  # absent in snapshots from before
