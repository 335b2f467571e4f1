"""The spill-over on the simulator's scenarios (benchmarks/lead_spillover.py): it fires on
its own scenario ahead of the receiving zone's density alarm, and nowhere else; the bridge's
spill into the grounds is seen by the rule long before the grounds' density alarm, with an
ETA to critical beyond the horizon (40,000 m² do not fill from a bridge in minutes)."""

from __future__ import annotations

import pytest

from benchmarks.lead_spillover import measure, report


@pytest.mark.kernels
def test_the_spillover_scenario_warns_ahead_of_the_density_alarm() -> None:
    res = measure(["spillover"], [1])
    assert {(ld.zone, ld.neighbour) for ld in res.leads} == {
        ("wat-yai-vihara", "wat-yai-grounds"), ("wat-yai-grounds", "naresuan-bridge")}
    for ld in res.leads:
        if ld.zone == "wat-yai-grounds":
            continue  # below
        assert ld.lead_s is not None
        assert ld.lead_s >= 60, ld  # at least a minute ahead of its own density alarm
        assert ld.spill_alert_ms is not None
        assert ld.spill_alert_ms >= ld.spill_ms - 600_000
        assert ld.episodes == 1, ld  # one spill, one episode (the rule's hysteresis)
    vihara = next(ld for ld in res.leads if ld.zone == "wat-yai-vihara")
    assert vihara.truth_elevated_ms is not None
    assert vihara.spill_alert_ms is not None
    assert vihara.spill_alert_ms < vihara.truth_elevated_ms  # before its density moved
    assert vihara.seen_ms is not None
    assert vihara.seen_ms <= vihara.spill_alert_ms
    assert vihara.seen_eta_s is not None
    assert vihara.seen_eta_s <= 600  # within the horizon: hence the alert
    grounds = next(ld for ld in res.leads if ld.zone == "wat-yai-grounds")
    # The bridge's spill over wy-gate-south: the rule names the bridge minutes before the
    # grounds' density moves to elevated (neighbour filling, inflow from it rising) ...
    assert grounds.truth_elevated_ms is not None
    assert grounds.density_alert_ms is not None
    assert grounds.seen_ms is not None
    assert grounds.spill_ms - 600_000 <= grounds.seen_ms < grounds.truth_elevated_ms - 300_000
    # ... but its ETA to critical (3.5 p/m² over 40,000 m²) stays beyond the 600 s
    # horizon: no alert, not a false one either.
    assert grounds.seen_eta_s is not None
    assert grounds.seen_eta_s > 600
    assert grounds.spill_alert_ms is None
    assert grounds.episodes == 0
    assert res.false_spills == []
    assert res.false_episodes == 0
    text = report(res, ["spillover"], [1])
    assert "| wat-yai-vihara <- wat-yai-grounds |" in text
    assert "| wat-yai-grounds <- naresuan-bridge | - |" in text
    assert "spill-over episodes per true spill (ideally 1): 0.50 (max 1)" in text


@pytest.mark.kernels
@pytest.mark.parametrize("scenario", ["ordinary-evening", "wat-yai-fair", "crush", "songkran",
                                      "wat-yai-hotspot", "loy-krathong"])
def test_no_spillover_where_there_is_none(scenario: str) -> None:
    res = measure([scenario], [2])
    assert res.false_spills == []
    assert res.spill_episodes == 0
