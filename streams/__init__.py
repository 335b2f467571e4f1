"""safetour's pure compute core: windows, density, levels, alert state.

Imports neither faust nor aiokafka (a test checks it), so everything here runs and tests
without a broker.
"""

from __future__ import annotations

from .alerts import BEYOND_DENSITY_REASONS, AlertTracker, episode_id
from .density import (
    DEFAULT_GRACE_MS,
    DEFAULT_IDLE_MS,
    DEFAULT_SLIDE_MS,
    DEFAULT_WINDOW_MS,
    WindowedDensityEngine,
)
from .engine import DensityEngine, DensityUpdate
from .indicators_flow import INDICATOR_REASONS, FlowIndicatorConfig
from .levels import (
    LEVEL_NAMES,
    MOVING_DEFAULTS,
    STANDING_DEFAULTS,
    Level,
    level_for,
    level_rank,
    resolve_thresholds,
)
from .messages import BANGKOK, alert_message, english_datetime, thai_datetime
from .registry import RegistryRules, check_zone_update, check_zones

__all__ = [
    "BANGKOK",
    "BEYOND_DENSITY_REASONS",
    "DEFAULT_GRACE_MS",
    "DEFAULT_IDLE_MS",
    "DEFAULT_SLIDE_MS",
    "DEFAULT_WINDOW_MS",
    "INDICATOR_REASONS",
    "LEVEL_NAMES",
    "MOVING_DEFAULTS",
    "STANDING_DEFAULTS",
    "AlertTracker",
    "DensityEngine",
    "DensityUpdate",
    "FlowIndicatorConfig",
    "Level",
    "RegistryRules",
    "WindowedDensityEngine",
    "alert_message",
    "check_zone_update",
    "check_zones",
    "english_datetime",
    "episode_id",
    "level_for",
    "level_rank",
    "resolve_thresholds",
    "thai_datetime",
]
