"""Every alert renders as CAP 1.2 that the OASIS schema accepts."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import orjson
import pytest
import xmlschema

from streams.cap import CAP_NS, to_cap

from .test_replay import REPO, run, write_inputs

NS = {"cap": CAP_NS}


@pytest.fixture(scope="module")
def cap_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(REPO / "schemas/xsd/CAP-v1.2.xsd")


@pytest.fixture(scope="module")
def alerts(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cap")
    events, reports = write_inputs(tmp)
    out = run(tmp, events, reports, "cap").split(b"--dlq--\n")[0]
    return [orjson.loads(x) for x in out.splitlines()]


NAMES = {"th": "วิหารพระพุทธชินราช", "en": "Wat Yai vihara"}
POLYGON = [[16.82395, 100.26215], [16.82395, 100.26245], [16.82370, 100.26245],
           [16.82370, 100.26215]]


def test_every_alert_validates_against_the_oasis_schema(
    alerts: list[dict[str, Any]], cap_schema: xmlschema.XMLSchema
) -> None:
    assert {a["status"] for a in alerts} >= {"raised", "escalated", "deescalated", "resolved"}
    for a in alerts:
        for kw in ({"polygon": POLYGON}, {"circle": (16.8158, 100.2636, 0.5)}):
            xml = to_cap(a, zone_names=NAMES, **kw)  # type: ignore[arg-type]
            cap_schema.validate(xml.decode())


def test_lifecycle_maps_to_msg_types_and_references(alerts: list[dict[str, Any]]) -> None:
    vihara = [a for a in alerts if a["zone_id"] == "wat-yai-vihara"]
    docs = [ET.fromstring(to_cap(a, zone_names=NAMES, polygon=POLYGON)) for a in vihara]
    assert [d.findtext("cap:msgType", namespaces=NS) for d in docs] == [
        "Alert", "Update", "Update", "Update", "Cancel"]
    first_id = docs[0].findtext("cap:identifier", namespaces=NS)
    for d in docs[1:]:
        _sender, ref, sent = d.findtext("cap:references", namespaces=NS).split(",")
        assert ref == first_id
        assert sent == docs[0].findtext("cap:sent", namespaces=NS)
    infos = docs[2].findall("cap:info", NS)
    assert [i.findtext("cap:language", namespaces=NS) for i in infos] == ["th-TH", "en-US"]
    assert infos[0].findtext("cap:severity", namespaces=NS) == "Extreme"  # critical
    poly = infos[0].findtext("cap:area/cap:polygon", namespaces=NS).split()
    assert len(poly) == 5
    assert poly[0] == poly[-1]
    assert docs[-1].find("cap:info/cap:responseType", NS).text == "AllClear"


def test_report_text_never_becomes_markup(alerts: list[dict[str, Any]]) -> None:
    a = dict(alerts[0])
    a["message"] = {"th": "<script>alert(1)</script> & ต่อ", "en": "</description><x/>"}
    xml = to_cap(a, zone_names=NAMES)
    doc = ET.fromstring(xml)
    assert doc.find("cap:info/cap:description", NS).text == a["message"]["th"]
    assert b"<script>" not in xml
