"""The detection benchmark (``python -m benchmarks.detection``) on one short scenario: its
invariants are issue 15's "done when"."""

from __future__ import annotations

import statistics

import pytest

from benchmarks.detection import TARGET_DELAY_S, main, measure, report


def test_the_crush_is_detected_early_steadily_and_truly() -> None:
    scored = measure(["crush"], [1])
    critical = [c for c in scored.crossings if c.level == "critical"]
    assert [c.zone for c in critical] == ["naresuan-bridge"]
    after = [c.delay("after") for c in scored.crossings]
    assert None not in after  # every crossing alerted
    assert statistics.median(d for d in after if d is not None) <= TARGET_DELAY_S
    delay = critical[0].delay("after")
    assert delay is not None
    assert delay <= TARGET_DELAY_S
    before = critical[0].delay("before")
    assert before is not None
    assert before > TARGET_DELAY_S  # what issue 15 measured: the old alarm was too slow
    assert scored.bumps
    assert all(counts["after"] == 1 for *_, counts in scored.bumps)  # one id per bump
    assert scored.false_criticals == {"before": 0, "after": 0}
    assert scored.false_alerts["after"] <= scored.false_alerts["before"]
    assert scored.eta_errors["after"]
    text = report(scored, ["crush"], [1])
    assert "| crush | naresuan-bridge | critical | 0:05:40 |" in text
    assert "python -m benchmarks.detection --seeds 1" in text


def test_unknown_scenarios_are_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--scenarios", "nope"])
