"""What an alert says: the forecast's range, the rising-edge estimate a level was raised on
(``density_estimate``), and every field a consumer receives is in alert.v1.json (issue 15
review)."""

from __future__ import annotations

import json
import random
import re
from typing import Any
from xml.etree import ElementTree as ET

import schemas
from schemas import Zone
from streams.alerts import AlertTracker
from streams.cap import CAP_NS, to_cap
from streams.engine import DensityUpdate
from streams.levels import STANDING_DEFAULTS, level_for
from streams.messages import eta_texts

from .test_alert_forecast import feed
from .test_pipeline import schema
from .test_replay import REPO

T0 = 1_771_150_000_000
ZONE = Zone("z", "โซน", "Zone", 100.0, "standing")
NS = {"cap": CAP_NS}


def surge(rate_per_min: float, steps: int = 80, base: float = 1.5) -> list[dict[str, Any]]:
    """The trailing 60 s mean of a crowd rising steadily from ``base`` p/m², every 5 s."""
    tracker = AlertTracker({"z": ZONE})
    out = []
    for i in range(steps):
        end = T0 + 5_000 * i
        d = base + rate_per_min * max(0.0, 5 * i - 30) / 60
        out += tracker.observe(DensityUpdate(
            "z", end - 60_000, end, d * 100, d, ("cam",), trend_per_min=rate_per_min,
            source="occupancy", readings=12, sensor_age_ms=(1_000,)))
    return out


def test_a_level_raised_ahead_of_the_mean_carries_and_says_its_estimate() -> None:
    alerts = surge(1.2)
    ahead = [a for a in alerts if level_for(a["density"], STANDING_DEFAULTS) < level_for(
        a.get("density_estimate", a["density"]), STANDING_DEFAULTS)]
    assert {a["level"] for a in ahead} >= {"critical"}  # the rising edge raised critical
    crit = next(a for a in alerts if a["level"] == "critical")
    assert crit["density"] < STANDING_DEFAULTS.critical <= crit["density_estimate"]
    assert crit["density_estimate"] <= crit["density"] * 1.2 + 1e-9  # the edge's cap
    assert (f"crowd density {crit['density']:.1f} persons/m² and rising fast "
            f"(estimated {crit['density_estimate']:.1f} now)") in crit["message"]["en"]
    assert f"(ประเมินว่าขณะนี้ {crit['density_estimate']:.1f})" in crit["message"]["th"]
    # Only where the published density is below the level: the estimate is then what the
    # alarm acted on; a level the mean itself reached says the mean alone.
    for a in alerts:
        below = level_for(a["density"], STANDING_DEFAULTS).wire != a["level"]
        assert ("density_estimate" in a) == (below and a["status"] in ("raised", "escalated")
                                             and a["reason"] == "density"), a
        assert ("rising fast" in a["message"]["en"]) == ("density_estimate" in a)
    validator = schema("alert.v1.json")
    for a in alerts:
        validator.validate(a)
    assert list(validator.iter_errors(dict(crit, density_estimate=-1)))
    doc = ET.fromstring(to_cap(crit, zone_names={"th": "โซน", "en": "Zone"}))
    params = {p.findtext("cap:valueName", namespaces=NS): p.findtext("cap:value", namespaces=NS)
              for p in doc.findall("cap:info/cap:parameter", NS)}
    assert params["density_estimate_p_per_m2"] == str(crit["density_estimate"])


def test_a_crowd_that_is_not_rising_is_raised_on_its_mean_and_says_no_estimate() -> None:
    alerts = surge(0.0, steps=40, base=2.2)
    assert [(a["status"], a["level"]) for a in alerts] == [("raised", "elevated")]
    assert "density_estimate" not in alerts[0]
    assert "rising fast" not in alerts[0]["message"]["en"]


def test_a_forecast_alert_and_its_cap_say_the_range() -> None:
    tracker = AlertTracker({"z": ZONE})
    alerts = []
    rng = random.Random(5)
    for i in range(40):  # a rise with a camera's jitter: the slope has a real range
        end = T0 + 5_000 * i
        d = 1.0 + 0.5 * 5 * i / 60 + rng.gauss(0, 0.05)
        alerts += tracker.observe(DensityUpdate(
            "z", end - 60_000, end, d * 100, d, ("cam",), trend_per_min=0.0,
            source="occupancy", readings=12, sensor_age_ms=(1_000,)))
    first = alerts[0]
    assert first["reason"] == "forecast"
    lo, hi = first["eta_critical_range_s"]
    assert round(lo / 60) < round(hi / 60)
    th, en = eta_texts(first["eta_critical_s"], (lo, hi))
    assert "–" in en
    assert en in first["message"]["en"]
    assert th in first["message"]["th"]
    doc = ET.fromstring(to_cap(first, zone_names={"th": "โซน", "en": "Zone"}))
    descriptions = [i.findtext("cap:description", namespaces=NS)
                    for i in doc.findall("cap:info", NS)]
    assert th in descriptions[0]
    assert en in descriptions[1]


# Where a field is added to an alert record after the tracker: ``out["x"] = `` on a copy
# (routing's stepped_below) or ``alert | {"x": ...}`` (shelving's unshelved, a drill's
# exercise).
ADDED = re.compile(r"""(?:\bout\[|\|\s*\{)\s*"([a-z_]+)"\s*[\]:]""")


def delivered_fields() -> set[str]:
    found = set()
    for path in [*sorted((REPO / "agents/delivery").glob("*.py")),
                 REPO / "streams/pipeline.py"]:
        found |= set(ADDED.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_field_a_consumer_receives_is_in_the_contract() -> None:
    doc = json.loads(schemas.schema_file("alert.v1.json").read_text())
    declared = set(doc["properties"])
    produced = {k for a in surge(1.2, steps=200) + feed(AlertTracker({"z": ZONE}), range(120))
                for k in a}
    assert produced >= {"density_estimate", "eta_critical_range_s", "reminder"}
    delivered = delivered_fields()
    assert delivered >= {"stepped_below", "unshelved", "exercise"}  # the pattern finds them
    assert produced | delivered <= declared, (produced | delivered) - declared
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("density_estimate", "stepped_below", "unshelved"):
        assert f"`{name}`" in readme, name
