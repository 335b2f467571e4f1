"""People see Bangkok time; Thai texts give Buddhist Era dates (CE + 543)."""

from __future__ import annotations

from schemas import parse_ts
from streams import alert_message, english_datetime, thai_datetime


def test_thai_date_is_buddhist_era_in_bangkok_time() -> None:
    # 13 April 2023 10:00 UTC is 17:00 in Bangkok, year 2566 BE.
    ts = parse_ts("2023-04-13T10:00:00Z")
    assert thai_datetime(ts) == "13 เมษายน 2566 เวลา 17.00 น."
    assert english_datetime(ts) == "17:00 ICT, 13 Apr 2023"


def test_bangkok_date_rolls_over_before_utc() -> None:
    ts = parse_ts("2025-12-31T17:30:00Z")  # 00:30 on 1 January 2026 in Bangkok
    assert thai_datetime(ts) == "1 มกราคม 2569 เวลา 00.30 น."


def test_density_message_snapshot() -> None:
    msg = alert_message(
        name_th="สะพานนเรศวร", name_en="Naresuan Bridge", level="critical", status="escalated",
        reason="density", density=5.234, eta_s=None, ts_ms=parse_ts("2026-02-15T19:30:00+07:00"),
    )
    assert msg == {
        "th": "สะพานนเรศวร: ความหนาแน่นของฝูงชน 5.2 คน/ตร.ม. ระดับวิกฤต (ระดับสูงขึ้น) "
              "15 กุมภาพันธ์ 2569 เวลา 19.30 น.",
        "en": "Naresuan Bridge: crowd density 5.2 persons/m², level CRITICAL (escalated) "
              "at 19:30 ICT, 15 Feb 2026",
    }


def test_forecast_and_report_message_snapshots() -> None:
    ts = parse_ts("2026-04-13T17:00:00+07:00")
    forecast = alert_message(
        name_th="ถนนสงกรานต์", name_en="Songkran street", level="elevated", status="raised",
        reason="forecast", density=2.6, eta_s=420, ts_ms=ts)
    assert forecast["th"] == (
        "ถนนสงกรานต์: ความหนาแน่นของฝูงชน 2.6 คน/ตร.ม. ระดับเฝ้าระวัง (แจ้งเตือนใหม่) "
        "หากยังเพิ่มขึ้นในอัตรานี้ จะถึงระดับวิกฤตในอีกประมาณ 7 นาที 13 เมษายน 2569 เวลา 17.00 น.")
    assert forecast["en"] == (
        "Songkran street: crowd density 2.6 persons/m², level ELEVATED (raised) - at this "
        "trend critical in about 7 min at 17:00 ICT, 13 Apr 2026")
    report = alert_message(
        name_th="วิหาร", name_en="Vihara", level="critical", status="raised", reason="report",
        density=None, eta_s=None, ts_ms=ts, report="crush")
    assert report["th"] == ("วิหาร: มีรายงานฝูงชนเบียดอัด ระดับวิกฤต (แจ้งเตือนใหม่) "
                            "13 เมษายน 2569 เวลา 17.00 น.")
    assert report["en"] == ("Vihara: crowd crush reported, level CRITICAL (raised) "
                            "at 17:00 ICT, 13 Apr 2026")
