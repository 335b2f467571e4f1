"""The end of a drill (agents/drill.py): each drill episode still open gets one resolution,
valid on the alert contract, ``exercise: true``, reason ``drill_ended``, the next ``seq``,
and its CAP counterpart (Exercise, Cancel referencing the first message); a real episode
and a resolved drill episode are not touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import jsonschema

from agents.drill import DRILL_ENDED, drill_end_alert, open_drill_episodes
from schemas import Zone, decode_alert
from streams.cap import CAP_NS, identifier, zone_to_cap

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "json" / "alert.v1.json")
                    .read_text())
NOW_MS = 1_771_246_800_000  # 2026-02-16T13:00:00Z


def rec(aid: str, seq: int, level: str = "high", status: str = "escalated", *,
        drill: bool = True) -> dict[str, Any]:
    a: dict[str, Any] = {
        "alert_id": f"drill-{aid}" if drill else aid, "zone_id": "night-bazaar",
        "level": level, "previous_level": "elevated", "status": status, "seq": seq,
        "density": 3.7, "occupancy": 100.0, "window_start": "2026-02-16T10:59:00.000Z",
        "window_end": "2026-02-16T11:00:00.000Z", "ts": f"2026-02-16T11:0{seq}:00.000Z",
        "episode_start": "2026-02-16T11:01:00.000Z", "eta_critical_s": 120.0,
        "message": {"th": "ท", "en": "e"}, "reason": "density"}
    if drill:
        a["exercise"] = True
    return a


def test_only_open_drill_episodes_count_by_their_newest_record() -> None:
    records = [rec("a", 1, "elevated", "raised"), rec("a", 2), rec("a", 2),  # a repeat
               rec("b", 1, "elevated", "raised"), rec("b", 2, "normal", "resolved"),
               rec("b", 1, "elevated", "raised"),  # a replay after its resolution
               rec("r", 1, "critical", "raised", drill=False),  # a real episode
               rec("x", 1) | {"alert_id": "x-not-a-drill"},  # exercise without the prefix
               {k: v for k, v in rec("y", 1).items() if k != "exercise"}]
    still = open_drill_episodes(records)
    assert list(still) == ["drill-a"]
    assert still["drill-a"]["seq"] == 2


def test_the_resolution_is_valid_marked_and_next_in_its_episode() -> None:
    zone = Zone(zone_id="night-bazaar", name_th="ถนนคนเดิน", name_en="Night bazaar",
                area_m2=1000.0, crowd="standing",
                polygon=((16.8, 100.2), (16.81, 100.2), (16.81, 100.21)))
    end = drill_end_alert(rec("a", 3), zone, NOW_MS)
    jsonschema.validate(end, SCHEMA)
    assert decode_alert(json.dumps(end).encode()) == end
    assert (end["alert_id"], end["status"], end["level"], end["previous_level"]) == (
        "drill-a", "resolved", "normal", "high")
    assert end["seq"] == 4
    assert end["exercise"] is True
    assert end["reason"] == DRILL_ENDED
    assert end["ts"] == "2026-02-16T13:00:00.000Z"
    assert "eta_critical_s" not in end
    assert end["message"]["en"].startswith("Drill ended: Night bazaar:")
    assert end["message"]["th"].startswith("สิ้นสุดการฝึกซ้อม: ถนนคนเดิน:")
    assert "20:00" in end["message"]["en"]  # Bangkok time
    cap = ET.fromstring(zone_to_cap(end, zone))
    ns = f"{{{CAP_NS}}}"
    assert cap.findtext(f"{ns}status") == "Exercise"
    assert cap.findtext(f"{ns}msgType") == "Cancel"
    first = identifier("drill-a", "raised", "2026-02-16T11:01:00.000Z")
    assert first in (cap.findtext(f"{ns}references") or "")
    # Never before the episode's last record (a scenario may run ahead of the clock).
    late = rec("a", 3) | {"ts": "2026-02-16T14:00:00.000Z"}
    assert drill_end_alert(late, None, NOW_MS)["ts"] == "2026-02-16T14:00:00.000Z"
