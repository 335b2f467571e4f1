"""Alerts as OASIS CAP 1.2 messages (ITU-T X.1303), one ``<info>`` per language.

Mapping from a safetour alert (``alert.v1.json``):

| alert            | CAP                                                                  |
|------------------|----------------------------------------------------------------------|
| status raised    | msgType ``Alert`` (a re-alarm: ``Update``)                            |
| escalated, deescalated | msgType ``Update``, ``references`` the episode's first message |
| resolved         | msgType ``Cancel`` (responseType ``AllClear``), ``references`` likewise |
| updated          | msgType ``Update`` (sensing lost or back), ``references`` likewise    |
| reason sensing_lost | certainty ``Unknown``: the zone is no longer observed              |
| exercise true    | status ``Exercise`` (a drill), ``[ฝึกซ้อม / DRILL]`` first in each headline; |
|                  | otherwise ``Actual``                                                  |
| level critical   | severity ``Extreme``, urgency ``Immediate``, responseType ``Avoid``      |
| level high       | severity ``Severe``, urgency ``Immediate``, responseType ``Avoid``       |
| level elevated   | severity ``Moderate``, urgency ``Expected``, responseType ``Monitor``    |
| reason forecast  | urgency ``Future``, certainty ``Likely``                              |
| reason spillover | likewise (a forecast: a neighbour filling into the zone), and a       |
|                  | ``<parameter>`` ``spillover_from`` naming the neighbour zone          |
| reason rate_of_rise, flow_breakdown, counter_flow | certainty ``Observed`` (measured flows), |
|                  | urgency ``Expected``; parameters ``indicator`` and the measured flows  |
| reason density   | certainty ``Observed``; reason report: ``Observed`` from staff, police |
|                  | or operators, else ``Likely``                                         |
| reason hotspot   | certainty ``Observed``; parameters ``hot_cell`` and                   |
|                  | ``hot_cell_density_p_per_m2`` (also on other alerts of a grid zone)   |

Identifiers are ``<alert_id>.<status>.<ms>`` (no spaces, commas or markup characters), so the
first message of an episode is known from the alert alone and can be referenced without state.
Times are given in Asia/Bangkok (``+07:00``), as CAP requires an explicit offset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from xml.etree import ElementTree as ET

from schemas import Zone, parse_ts

from .messages import BANGKOK, DRILL_MARKER

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
DEFAULT_SENDER = "safetour@ops.phitsanulok.example"
SENDER_NAME = {
    "th-TH": "ศูนย์ปฏิบัติการจังหวัดพิษณุโลก (ท่องเที่ยวปลอดภัย)",
    "en-US": "Phitsanulok Provincial Operations Centre (Safe Tourism)",
}
SEVERITY = {"critical": "Extreme", "high": "Severe", "elevated": "Moderate", "normal": "Minor"}
URGENCY = {"critical": "Immediate", "high": "Immediate", "elevated": "Expected",
           "normal": "Past"}
RESPONSE = {"critical": "Avoid", "high": "Avoid", "elevated": "Monitor", "normal": "AllClear"}
EVENT = {"th-TH": "ความหนาแน่นของฝูงชน", "en-US": "Crowd density"}
INSTRUCTION = {
    "th-TH": {
        "critical": "หลีกเลี่ยงพื้นที่ ปฏิบัติตามคำแนะนำของเจ้าหน้าที่ เปิดทางออกและหยุดการเข้าพื้นที่",
        "high": "จำกัดการเข้าพื้นที่ เตรียมเปิดทางระบาย และเพิ่มเจ้าหน้าที่ดูแล",
        "elevated": "เฝ้าติดตามสถานการณ์ เตรียมเจ้าหน้าที่และเส้นทางระบายคน",
        "normal": "สถานการณ์กลับสู่ภาวะปกติ",
    },
    "en-US": {
        "critical": "Avoid the area. Follow staff instructions; open exits and stop entry.",
        "high": "Restrict entry, prepare to open relief routes and add staff.",
        "elevated": "Monitor; get staff and relief routes ready.",
        "normal": "The situation is back to normal.",
    },
}
_ID_UNSAFE = re.compile(r"[\s,<&]")


def cap_time(rfc3339: str) -> str:
    """CAP's dateTime form: seconds, explicit offset (Bangkok), no fraction, no ``Z``."""
    dt = datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).astimezone(BANGKOK)
    return dt.strftime("%Y-%m-%dT%H:%M:%S+07:00")


def identifier(alert_id: str, status: str, ts: str) -> str:
    return _ID_UNSAFE.sub("_", f"{alert_id}.{status}.{parse_ts(ts)}")


def _polygon(points: Sequence[Sequence[float]]) -> str:
    pts = [(float(p[0]), float(p[1])) for p in points]
    if pts[0] != pts[-1]:
        pts.append(pts[0])  # CAP: the first and last pairs are the same
    return " ".join(f"{lat:.6f},{lon:.6f}" for lat, lon in pts)


def to_cap(
    alert: Mapping[str, Any],
    *,
    zone_names: Mapping[str, str],
    polygon: Sequence[Sequence[float]] | None = None,
    circle: tuple[float, float, float] | None = None,
    sender: str = DEFAULT_SENDER,
    cap_status: str | None = None,
) -> bytes:
    """Render one alert as CAP 1.2 XML. ``zone_names``: ``{"th": ..., "en": ...}``;
    ``polygon``: the zone's ``[lat, lon]`` points, or else ``circle``: (lat, lon, radius km)."""
    ET.register_namespace("", CAP_NS)

    def el(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
        e = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
        if text is not None:
            e.text = text
        return e

    status = str(alert["status"])
    level = str(alert["level"])
    drill = alert.get("exercise") is True
    reason = str(alert.get("reason", "density"))
    sent = cap_time(str(alert["ts"]))
    root = ET.Element(f"{{{CAP_NS}}}alert")
    el(root, "identifier", identifier(str(alert["alert_id"]), status, str(alert["ts"])))
    el(root, "sender", sender)
    el(root, "sent", sent)
    # A drill's alert (``exercise``: agents/devtools drill) is an Exercise, any other Actual.
    el(root, "status", cap_status or ("Exercise" if drill else "Actual"))
    first = status == "raised" and not alert.get("reminder")
    el(root, "msgType", "Alert" if first else "Cancel" if status == "resolved" else "Update")
    el(root, "source", "safetour")
    el(root, "scope", "Public")
    if not first:
        start = str(alert.get("episode_start", alert["ts"]))
        ref = identifier(str(alert["alert_id"]), "raised", start)
        el(root, "references", f"{sender},{ref},{cap_time(start)}")
    el(root, "incidents", _ID_UNSAFE.sub("_", str(alert["alert_id"])))
    sources = {r.get("source") for r in alert.get("evidence", {}).get("reports", [])}
    if reason in ("forecast", "spillover"):
        certainty = "Likely"
    elif reason == "sensing_lost":
        certainty = "Unknown"
    elif reason == "report":
        certainty = "Observed" if sources & {"staff", "police", "operator"} else "Likely"
    else:
        certainty = "Observed"
    message = alert.get("message", {})
    if reason == "sensing_lost":
        el(root, "note", "All sensors of the zone stopped reporting; the level stands unseen.")
    for lang, key in (("th-TH", "th"), ("en-US", "en")):
        info = el(root, "info")
        el(info, "language", lang)
        el(info, "category", "Safety")
        el(info, "event", EVENT[lang])
        el(info, "responseType", "AllClear" if status == "resolved" else RESPONSE[level])
        el(info, "urgency", "Future" if reason in ("forecast", "spillover")
           and status != "resolved"
           else URGENCY[level if status != "resolved" else "normal"])
        el(info, "severity", SEVERITY[level])
        el(info, "certainty", certainty)
        el(info, "effective", sent)
        el(info, "senderName", SENDER_NAME[lang])
        headline = (f"{zone_names[key]}: {EVENT[lang]} {level.upper()}" if lang == "en-US"
                    else f"{zone_names[key]}: {EVENT[lang]}")
        el(info, "headline", f"{DRILL_MARKER} {headline}" if drill else headline)
        el(info, "description", str(message.get(key, "")))
        el(info, "instruction", INSTRUCTION[lang][level])
        flows = alert.get("flows")
        extra = ([("indicator", reason), *sorted(flows.items())] if isinstance(flows, dict)
                 else [])
        for name, value in (("density_p_per_m2", alert.get("density")),
                            ("density_estimate_p_per_m2", alert.get("density_estimate")),
                            ("eta_critical_s", alert.get("eta_critical_s")),
                            ("confidence", alert.get("confidence")),
                            ("hot_cell", alert.get("hot_cell")),
                            ("hot_cell_density_p_per_m2", alert.get("hot_density")),
                            ("spillover_from", (alert.get("spillover") or {}).get("neighbour")),
                            *extra):
            if value is not None:
                p = el(info, "parameter")
                el(p, "valueName", name)
                el(p, "value", str(value))
        area = el(info, "area")
        el(area, "areaDesc", zone_names[key])
        if polygon and len(polygon) >= 3:
            el(area, "polygon", _polygon(polygon))
        elif circle is not None:
            el(area, "circle", f"{circle[0]:.6f},{circle[1]:.6f} {circle[2]:g}")
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml


def zone_to_cap(alert: Mapping[str, Any], zone: Zone) -> bytes:
    """:func:`to_cap` with the area of a registry zone (its polygon, else its optional
    ``circle``: [lat, lon, radius km]): what the worker and the end of a drill publish."""
    circle = zone.extra.get("circle")
    return to_cap(alert, zone_names={"th": zone.name_th, "en": zone.name_en},
                  polygon=zone.polygon,
                  circle=tuple(circle) if isinstance(circle, list) else None)
