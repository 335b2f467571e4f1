"""The live detection benchmark's own arithmetic (the broker run itself is
``python -m benchmarks.detection live``): alerts matched live against offline, the table."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.detection import Crossing, Run, Scored
from benchmarks.detection_live import LiveRun, _speeds, alert_lags, live_table, main_live


def alert(aid: str, seq: int) -> dict[str, Any]:
    return {"alert_id": aid, "seq": seq, "zone_id": "z", "level": "high"}


def test_alerts_are_matched_by_id_and_seq_and_the_odd_ones_counted() -> None:
    live = Run([(12_000, alert("a", 1)), (20_500, alert("a", 2)), (30_000, alert("b", 1))])
    offline = Run([(10_000, alert("a", 1)), (21_000, alert("a", 2)), (5_000, alert("c", 1))])
    lags, unmatched = alert_lags(live, offline)
    assert lags == [2.0, -0.5]
    assert unmatched == 2  # b live only, c offline only


def test_the_table_gives_offline_and_live_per_level_and_the_lag() -> None:
    sc = Scored()
    for mode in ("offline", "after"):
        sc.false_alerts[mode] = 0
        sc.false_criticals[mode] = 0
    c = Crossing("crush", 1, "z", "elevated", 0, 100_000, {"offline": 20_000, "after": 26_000})
    sc.crossings.append(c)
    sc.bumps.append(("crush", 1, "z", 0, {"after": 1, "offline": 1}))
    run = LiveRun("crush", 1, 10.0, sc, 0.3, [1.0, 3.0, -4.0], 0)
    row = live_table([run]).splitlines()[2]
    assert row == ("| crush | 1 | 10x | +20 / +26 | - / - | - / - | 0 / 0 | 0 | 1 of 1 "
                   "| 0.3 | +1.0 (-4.0) |")


def test_speeds_per_scenario() -> None:
    assert _speeds([]) == (10.0, {})
    assert _speeds(["20", "crush=10"]) == (20.0, {"crush": 10.0})
    with pytest.raises(SystemExit):
        main_live(["--bootstrap", "x", "--speed", "fast"])
    with pytest.raises(SystemExit):
        main_live(["--bootstrap", "x", "--scenarios", "nope"])
