"""People see Bangkok time; Thai texts give Buddhist Era dates (CE + 543)."""

from __future__ import annotations

from schemas import parse_ts
from streams import density_message, english_datetime, thai_datetime


def test_thai_date_is_buddhist_era_in_bangkok_time() -> None:
    # 13 April 2023 10:00 UTC is 17:00 in Bangkok, year 2566 BE.
    ts = parse_ts("2023-04-13T10:00:00Z")
    assert thai_datetime(ts) == "13 เมษายน 2566 เวลา 17.00 น."
    assert english_datetime(ts) == "17:00 ICT, 13 Apr 2023"


def test_bangkok_date_rolls_over_before_utc() -> None:
    ts = parse_ts("2025-12-31T17:30:00Z")  # 00:30 on 1 January 2026 in Bangkok
    assert thai_datetime(ts) == "1 มกราคม 2569 เวลา 00.30 น."


def test_density_message_snapshot() -> None:
    msg = density_message(
        name_th="สะพานนเรศวร", name_en="Naresuan Bridge", level="critical", status="escalated",
        density=5.234, ts_ms=parse_ts("2026-02-15T19:30:00+07:00"),
    )
    assert msg == {
        "th": "สะพานนเรศวร: ความหนาแน่นของฝูงชน 5.2 คน/ตร.ม. ระดับวิกฤต (ระดับสูงขึ้น) "
              "15 กุมภาพันธ์ 2569 เวลา 19.30 น.",
        "en": "Naresuan Bridge: crowd density 5.2 persons/m², level CRITICAL (escalated) "
              "at 19:30 ICT, 15 Feb 2026",
    }
