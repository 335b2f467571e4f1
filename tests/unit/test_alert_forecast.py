"""Alerts carry the robust forecast (ETA with its range, alert.v1.json's optional
``eta_critical_range_s``), and the alarm's new state survives a snapshot."""

from __future__ import annotations

import math
from typing import Any

import pytest

from schemas import Zone, parse_ts
from streams.alarm import AlarmConfig
from streams.alerts import AlertTracker
from streams.engine import DensityUpdate

from .test_pipeline import schema

T0 = 1_771_150_000_000
ZONE = Zone("z", "โซน", "Zone", 100.0, "standing")


def update(i: int, density: float, trend: float = 0.0) -> DensityUpdate:
    end = T0 + 5_000 * i
    return DensityUpdate("z", end - 60_000, end, density * 100, density, ("cam",),
                         trend_per_min=trend, source="occupancy", readings=12,
                         sensor_age_ms=(1_000,))


def rise(i: int) -> float:
    """1.0 p/m² rising 0.5 p/m² per minute (the trailing mean of a 60 s window)."""
    return 1.0 + 0.5 * 5 * i / 60


def feed(tracker: AlertTracker, steps: range) -> list[dict[str, Any]]:
    return [a for i in steps for a in tracker.observe(update(i, rise(i)))]


def test_a_forecast_alert_carries_its_eta_and_range_and_validates() -> None:
    alerts = feed(AlertTracker({"z": ZONE}), range(40))
    first = alerts[0]
    assert (first["status"], first["reason"], first["level"]) == ("raised", "forecast",
                                                                 "elevated")
    lo, hi = first["eta_critical_range_s"]
    assert lo <= first["eta_critical_s"] <= hi
    # Raised at 70 s (60 s of history, then the 10 s on-delay). The mean reaches 5.0 at
    # 480 s; the truth, 30 s (half the window) ahead of it, at 450 s.
    assert parse_ts(first["ts"]) == T0 + 70_000
    predicted = parse_ts(first["ts"]) / 1000 + first["eta_critical_s"]
    assert predicted == pytest.approx(T0 / 1000 + 450, abs=2)
    validator = schema("alert.v1.json")
    for a in alerts:
        validator.validate(a)
    bad = dict(first, eta_critical_range_s=[-1, 3])
    assert list(validator.iter_errors(bad))
    open_ended = dict(first, eta_critical_range_s=[120.0, None])
    validator.validate(open_ended)


def test_legacy_alerts_have_no_range() -> None:
    tracker = AlertTracker({"z": ZONE}, AlarmConfig().legacy())
    alerts = [a for i in range(40) for a in tracker.observe(update(i, rise(i), 0.5))]
    assert alerts
    assert all("eta_critical_range_s" not in a for a in alerts)


def test_the_trend_and_forecast_hold_survive_a_snapshot_and_old_snapshots_restore() -> None:
    whole = AlertTracker({"z": ZONE})
    expected = feed(whole, range(120))
    first = AlertTracker({"z": ZONE})
    before = feed(first, range(30))
    state = first.export_state(["z"])
    assert state["z"]["trend"]  # the records behind the forecast
    second = AlertTracker({"z": ZONE})
    second.import_state(["z"], state)
    kept, restored = first._zones["z"].alarm.trend, second._zones["z"].alarm.trend
    assert kept is not None
    assert restored == kept  # the same points, span, step and window
    assert before + feed(second, range(30, 120)) == expected
    # A snapshot from before issue 15 (no trend, no forecast hold) still restores; the
    # trend builds up again from the next record.
    old = {k: v for k, v in state["z"].items() if k not in ("trend", "forecast_far_since")}
    third = AlertTracker({"z": ZONE})
    third.import_state(["z"], {"z": old})
    a = third._zones["z"].alarm
    assert a.trend is None
    assert a.forecast_far_since is None
    assert a.level == first._zones["z"].alarm.level
    feed(third, range(30, 40))
    assert a.trend is not None
    assert a.trend.points[0] == (T0 + 5_000 * 30, rise(30))  # from the next record on
    assert len(a.trend.points) == 10


def test_a_blind_zone_has_no_forecast() -> None:
    tracker = AlertTracker({"z": ZONE})
    feed(tracker, range(40))
    blind = tracker.observe(update(40, math.nan))
    assert [(x["reason"], x["eta_critical_s"]) for x in blind] == [("sensing_lost", None)]
    assert "eta_critical_range_s" not in blind[0]


def test_an_alerts_confidence_follows_its_windows_confidence() -> None:
    # Stale or disagreeing sensors lower the density record's confidence; the alert said
    # 0.9 (the camera's source confidence) whatever the window's (a stranger's review).
    def alerts_with(conf: float) -> list[dict[str, Any]]:
        tracker = AlertTracker({"z": ZONE})
        out = []
        for i in range(40):
            out += tracker.observe(update(i, 6.0)._replace(confidence=conf))
        return out

    sure, doubtful, blindish = alerts_with(1.0), alerts_with(0.5), alerts_with(math.nan)
    assert sure[0]["confidence"] == 0.9
    assert doubtful[0]["confidence"] == 0.45
    assert blindish[0]["confidence"] == 0.9  # unknown (NaN): the source's own
