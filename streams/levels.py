"""Crowd-density levels and their default thresholds.

Defaults (persons per m² of usable area), from ``docs/domain.md`` section 1:

standing crowds (G. K. Still; UK Green Guide; HSE HSG195)
    elevated 2.0  HSG195 plans outdoor events at 0.5 m² per person (2 p/m²)
    high     3.5  between involuntary contact (3.57, Fruin-derived) and the Green Guide's 4.7
    critical 5.0  Still: 5 p/m² is the maximum for safety planning of standing crowds

moving crowds (Fruin 1971 walkway level of service; Still)
    elevated 1.08 Fruin LOS E begins (flow near capacity)
    high     2.17 Fruin LOS F begins (flow breaks down)
    critical 3.5  Still: ~4 p/m² stops a moving crowd; dangerous forces at 5.55 (EPJ chart)
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

from schemas import Thresholds


class Level(IntEnum):
    NORMAL = 0
    ELEVATED = 1
    HIGH = 2
    CRITICAL = 3

    @property
    def wire(self) -> str:
        return self.name.lower()


# The wire names in rising order: the one level order every package uses.
LEVEL_NAMES: Final[tuple[str, ...]] = tuple(lv.wire for lv in Level)


def level_rank(name: str) -> int:
    """The rank of a wire level name (``normal`` 0 .. ``critical`` 3); -1 if unknown."""
    return LEVEL_NAMES.index(name) if name in LEVEL_NAMES else -1


STANDING_DEFAULTS: Final = Thresholds(elevated=2.0, high=3.5, critical=5.0)
MOVING_DEFAULTS: Final = Thresholds(elevated=1.08, high=2.17, critical=3.5)


def defaults_for(crowd: str) -> Thresholds:
    return STANDING_DEFAULTS if crowd == "standing" else MOVING_DEFAULTS


def resolve_thresholds(
    crowd: str, override: Thresholds | None, defaults: Thresholds | None = None
) -> Thresholds:
    """The crowd type's defaults (or ``defaults``), with any levels the zone sets (a 0 means
    'not set')."""
    base = defaults or defaults_for(crowd)
    if override is None:
        return base
    t = Thresholds(
        override.elevated or base.elevated,
        override.high or base.high,
        override.critical or base.critical,
    )
    if not t.elevated < t.high < t.critical:
        raise ValueError(f"thresholds must rise: elevated < high < critical, got {t}")
    return t


def level_for(density: float, t: Thresholds) -> Level:
    if density >= t.critical:
        return Level.CRITICAL
    if density >= t.high:
        return Level.HIGH
    if density >= t.elevated:
        return Level.ELEVATED
    return Level.NORMAL
