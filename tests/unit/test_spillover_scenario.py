"""The spill-over on the simulator's scenarios (benchmarks/lead_spillover.py): it fires on
its own scenario ahead of the receiving zone's density alarm, and nowhere else."""

from __future__ import annotations

import pytest

from benchmarks.lead_spillover import measure, report


@pytest.mark.kernels
def test_the_spillover_scenario_warns_ahead_of_the_density_alarm() -> None:
    res = measure(["spillover"], [1])
    assert {(ld.zone, ld.neighbour) for ld in res.leads} == {
        ("wat-yai-vihara", "wat-yai-grounds")}
    for ld in res.leads:
        assert ld.lead_s is not None
        assert ld.lead_s >= 60, ld  # at least a minute ahead of its own density alarm
        assert ld.spill_alert_ms is not None
        assert ld.spill_alert_ms >= ld.spill_ms - 600_000
        assert ld.episodes == 1, ld  # one spill, one episode (the rule's hysteresis)
    vihara = next(ld for ld in res.leads if ld.zone == "wat-yai-vihara")
    assert vihara.truth_elevated_ms is not None
    assert vihara.spill_alert_ms is not None
    assert vihara.spill_alert_ms < vihara.truth_elevated_ms  # before its density moved
    assert res.false_spills == []
    text = report(res, ["spillover"], [1])
    assert "| 1 |\n" in text
    assert "spill-over episodes per true spill (ideally 1): 1.00 (max 1)" in text


@pytest.mark.kernels
@pytest.mark.parametrize("scenario", ["ordinary-evening", "wat-yai-fair", "crush", "songkran"])
def test_no_spillover_where_there_is_none(scenario: str) -> None:
    res = measure([scenario], [2])
    assert res.false_spills == []
    assert res.spill_episodes == 0
