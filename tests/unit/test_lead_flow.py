"""Issue 16, part a, "done when": each indicator fires on its own scenario ahead of the density
alarm, once per bump, and stays quiet where it does not belong (``benchmarks/lead_flow.py``;
the README table runs seeds 1..5 over every scenario, this test seed 1)."""

from __future__ import annotations

import pytest

from agents.devtools.simulator import SCENARIOS, simulate
from benchmarks.detection import ZONES_FILE
from benchmarks.lead_flow import OWN, measure, report
from schemas import load_zones
from streams import INDICATOR_REASONS


@pytest.mark.kernels
def test_each_indicator_leads_the_density_alarm_on_its_own_scenario() -> None:
    scenarios = ["ordinary-evening", *sorted({s for s, _ in OWN.values()})]
    sc = measure([1], scenarios)
    for r in INDICATOR_REASONS:
        (lead,) = sc.leads[r]
        assert lead is not None, r
        assert lead >= 60, (r, lead)  # at least a minute ahead
        (after,) = sc.after_truth[r]
        assert after is not None, r
        assert after < 150, (r, after)  # soon after the true start
        assert sc.per_bump[r] == [1], r  # one episode per bump: no flapping
        assert sc.raised[r] >= 1
        assert sc.false[r] == 0, (r, sc.false_where[r])
        assert sc.no_bump[r] == 0, r
    text = report(sc, [1], scenarios)
    assert "| flow_breakdown | vihara-door / wat-yai-vihara |" in text


def test_the_ground_truth_has_each_indicator_only_where_it_belongs() -> None:
    zones = load_zones(ZONES_FILE)
    quiet = simulate(SCENARIOS["ordinary-evening"], zones, seed=1).truth
    assert all(not eps for z in quiet["zones"].values() for eps in z["indicators"].values())
    for r, (name, zone) in OWN.items():
        truth = simulate(SCENARIOS[name], zones, seed=1).truth["zones"][zone]["indicators"]
        assert truth[r], (r, name)
