"""safetour's pure compute core: windows, density, levels, alert state.

Imports neither faust nor aiokafka (a test checks it), so everything here runs and tests
without a broker.
"""

from __future__ import annotations

from .alerts import AlertTracker, episode_id
from .density import (
    DEFAULT_GRACE_MS,
    DEFAULT_IDLE_MS,
    DEFAULT_SLIDE_MS,
    DEFAULT_WINDOW_MS,
    WindowedDensityEngine,
)
from .engine import DensityEngine, DensityUpdate
from .levels import MOVING_DEFAULTS, STANDING_DEFAULTS, Level, level_for, resolve_thresholds
from .messages import BANGKOK, alert_message, english_datetime, thai_datetime

__all__ = [
    "BANGKOK",
    "DEFAULT_GRACE_MS",
    "DEFAULT_IDLE_MS",
    "DEFAULT_SLIDE_MS",
    "DEFAULT_WINDOW_MS",
    "MOVING_DEFAULTS",
    "STANDING_DEFAULTS",
    "AlertTracker",
    "DensityEngine",
    "DensityUpdate",
    "Level",
    "WindowedDensityEngine",
    "alert_message",
    "english_datetime",
    "episode_id",
    "level_for",
    "resolve_thresholds",
    "thai_datetime",
]
