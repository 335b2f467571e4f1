"""CAP 1.2 and the texts of the flow indicators' alerts ``rate_of_rise`` and ``counter_flow``
(streams/cap.py, streams/messages.py): real alerts of the alert tracker, validated against
the OASIS schema, with certainty Observed, urgency Expected, the indicator and its measured
flows as parameters, and the Thai and English messages word for word."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest
import xmlschema

from schemas import Kind, SensorSpec, Zone
from streams import AlertTracker
from streams.alarm import AlarmConfig
from streams.cap import CAP_NS, to_cap
from streams.indicators_flow import FlowIndicatorConfig, LineFlows

from .test_indicators_flow import ZONE, ramp, update
from .test_replay import REPO

NS = {"cap": CAP_NS}
T0_S = 1_771_158_600.0  # 2026-02-15 12:30 UTC: 19:30 in Bangkok
WALKWAY = Zone("w", "ทางเดินริมน่าน", "Nan riverside walk", 600.0, "moving",
               (SensorSpec("cam", Kind.OCCUPANCY, coverage_m2=600.0),
                SensorSpec("door", Kind.LINE_COUNT, width_m=4.0)))
TWO_STREAMS = LineFlows(0.3, 30.0, 0.8)


@pytest.fixture(scope="module")
def cap_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(REPO / "schemas/xsd/CAP-v1.2.xsd")


def episode(zone: Zone, reason: str, steps: list[tuple[float, float, LineFlows]]
            ) -> list[dict[str, Any]]:
    t = AlertTracker({zone.zone_id: zone},
                     AlarmConfig(indicators=FlowIndicatorConfig().only(reason)))
    return [a for s, d, f in steps for a in t.observe(update(zone.zone_id, T0_S + s, d, f))]


def rate_of_rise() -> list[dict[str, Any]]:
    """A standing zone rising 0.3 p/m² a minute from 1.0 for 5 minutes, then emptying."""
    return episode(ZONE, "rate_of_rise", ramp(1.0, 0.3, 300) + ramp(2.5, -0.3, 600, t0=300))


def counter_flow() -> list[dict[str, Any]]:
    """Two balanced dense streams through a filling walkway, then it empties."""
    return episode(WALKWAY, "counter_flow",
                   ramp(0.6, 0.07, 400, TWO_STREAMS, noise=0.005)
                   + ramp(0.6 + 0.07 * 400 / 60, -0.07, 600, TWO_STREAMS, t0=400))


def params(info: ET.Element) -> dict[str, str]:
    return {p.findtext("cap:valueName", namespaces=NS) or "": p.findtext(
        "cap:value", namespaces=NS) or "" for p in info.findall("cap:parameter", NS)}


@pytest.mark.parametrize(("alerts", "reason", "flows"), [
    (rate_of_rise, "rate_of_rise", {"rise_per_min": "0.3"}),
    (counter_flow, "counter_flow", {"outflow_per_m_s": "0.3", "counterflow_per_m_min": "30.0",
                                    "counterflow_balance": "0.8"}),
])
def test_an_indicator_episode_renders_as_valid_cap_with_its_measured_flows(
    alerts: Any, reason: str, flows: dict[str, str], cap_schema: xmlschema.XMLSchema
) -> None:
    got = alerts()
    assert [(a["status"], a["level"], a["reason"]) for a in got] == [
        ("raised", "elevated", reason), ("resolved", "normal", reason)]
    zone = ZONE if reason == "rate_of_rise" else WALKWAY
    names = {"th": zone.name_th, "en": zone.name_en}
    raised, resolved = (ET.fromstring(to_cap(a, zone_names=names)) for a in got)
    for a in got:
        cap_schema.validate(to_cap(a, zone_names=names).decode())
    assert raised.findtext("cap:msgType", namespaces=NS) == "Alert"
    assert resolved.findtext("cap:msgType", namespaces=NS) == "Cancel"
    for info, lang, key in zip(raised.findall("cap:info", NS), ("th-TH", "en-US"), ("th", "en"),
                               strict=True):
        assert info.findtext("cap:language", namespaces=NS) == lang
        assert info.findtext("cap:certainty", namespaces=NS) == "Observed"  # measured flows
        assert info.findtext("cap:urgency", namespaces=NS) == "Expected"
        assert info.findtext("cap:severity", namespaces=NS) == "Moderate"
        assert info.findtext("cap:responseType", namespaces=NS) == "Monitor"
        assert info.findtext("cap:description", namespaces=NS) == got[0]["message"][key]
        p = params(info)
        assert p["indicator"] == reason
        assert {k: p[k] for k in flows} == flows
        assert p["density_p_per_m2"] == str(got[0]["density"])
    end = resolved.find("cap:info", NS)
    assert end is not None
    assert end.findtext("cap:responseType", namespaces=NS) == "AllClear"
    assert end.findtext("cap:urgency", namespaces=NS) == "Past"
    assert params(end)["indicator"] == reason


def test_the_rate_of_rise_texts_say_it_in_thai_and_english() -> None:
    raised, resolved = rate_of_rise()
    assert raised["message"] == {
        "th": "วิหาร: ความหนาแน่นของฝูงชนเพิ่มขึ้นเร็วผิดปกติ ความหนาแน่นของฝูงชน 1.5 คน/ตร.ม. "
              "ระดับเฝ้าระวัง (แจ้งเตือนใหม่) หากยังเพิ่มขึ้นในอัตรานี้ "
              "จะถึงระดับวิกฤตในอีกประมาณ 11 นาที 15 กุมภาพันธ์ 2569 เวลา 19.31 น.",
        "en": "Vihara: the crowd density is rising fast, crowd density 1.5 persons/m², level "
              "ELEVATED (raised) - at this trend critical in about 11 min at 19:31 ICT, "
              "15 Feb 2026"}
    # The all-clear does not repeat the indicator.
    assert resolved["message"] == {
        "th": "วิหาร: ความหนาแน่นของฝูงชน 1.6 คน/ตร.ม. ระดับปกติ (กลับสู่ภาวะปกติ) "
              "15 กุมภาพันธ์ 2569 เวลา 19.37 น.",
        "en": "Vihara: crowd density 1.6 persons/m², level NORMAL (resolved) at 19:37 ICT, "
              "15 Feb 2026"}


def test_the_counter_flow_texts_say_it_in_thai_and_english() -> None:
    raised, resolved = counter_flow()
    assert raised["message"] == {
        "th": "ทางเดินริมน่าน: มีฝูงชนหนาแน่นเดินสวนทางกันขณะที่พื้นที่แน่นขึ้น "
              "ความหนาแน่นของฝูงชน 0.7 คน/ตร.ม. ระดับเฝ้าระวัง (แจ้งเตือนใหม่) "
              "หากยังเพิ่มขึ้นในอัตรานี้ จะถึงระดับวิกฤตในอีกประมาณ 38 นาที (36–40 นาที) "
              "15 กุมภาพันธ์ 2569 เวลา 19.31 น.",
        "en": "Nan riverside walk: two dense streams are walking against each other as the "
              "zone fills, crowd density 0.7 persons/m², level ELEVATED (raised) - at this "
              "trend critical in about 38 min (36–40 min) at 19:31 ICT, 15 Feb 2026"}
    assert "สวนทาง" not in resolved["message"]["th"]
    assert "against each other" not in resolved["message"]["en"]
