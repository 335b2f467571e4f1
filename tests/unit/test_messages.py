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


def test_a_forecast_says_its_range_in_thai_and_english() -> None:
    """Issue 15 review: the ETA range was published (eta_critical_range_s) but not said."""
    ts = parse_ts("2026-04-13T17:00:00+07:00")

    def texts(eta_range: tuple[float, float | None] | None, eta: float = 480
              ) -> tuple[str, str]:
        m = alert_message(name_th="ถนน", name_en="Street", level="elevated", status="raised",
                          reason="forecast", density=2.6, eta_s=eta, ts_ms=ts,
                          eta_range=eta_range)
        return m["th"], m["en"]

    th, en = texts((360, 660))
    assert "จะถึงระดับวิกฤตในอีกประมาณ 8 นาที (6–11 นาที) 13 เมษายน" in th
    assert "critical in about 8 min (6–11 min) at 17:00 ICT" in en
    th, en = texts((300, 2400))  # latest more than 3 x the earliest
    assert "ประมาณ 8 นาที (5–40 นาที ยังไม่แน่นอนมาก)" in th
    assert "about 8 min (5–40 min, very uncertain)" in en
    th, en = texts((360, None))  # the slope's lower bound is not rising
    assert "ประมาณ 8 นาที (เร็วที่สุด 6 นาที ช้าที่สุดประเมินไม่ได้)" in th
    assert "about 8 min (6 min at the earliest; the latest cannot be told)" in en
    th, en = texts((470, 490))  # the same minute both ends: no range said
    assert th.count("นาที") == 1
    assert "about 8 min at" in en
    th, en = texts((0, 90), eta=50)  # could be now: from 0
    assert "ประมาณ 1 นาที (0–2 นาที)" in th
    assert "about 1 min (0–2 min)" in en
    assert texts(None, eta=50) == (th.replace(" (0–2 นาที)", ""),
                                   en.replace(" (0–2 min)", ""))


def test_a_level_raised_on_the_rising_edge_states_the_estimate() -> None:
    """Issue 15 review: "level CRITICAL, density 4.6" with critical at 5.0 reads as a
    mistake; the text says the estimate the alarm acted on."""
    m = alert_message(name_th="สะพานนเรศวร", name_en="Naresuan Bridge", level="critical",
                      status="escalated", reason="density", density=4.62, eta_s=None,
                      ts_ms=parse_ts("2026-02-15T19:30:00+07:00"), estimate=5.31)
    assert m["en"] == ("Naresuan Bridge: crowd density 4.6 persons/m² and rising fast "
                       "(estimated 5.3 now), level CRITICAL (escalated) at 19:30 ICT, "
                       "15 Feb 2026")
    assert m["th"] == ("สะพานนเรศวร: ความหนาแน่นของฝูงชน 4.6 คน/ตร.ม. และเพิ่มขึ้นอย่างรวดเร็ว "
                       "(ประเมินว่าขณะนี้ 5.3) ระดับวิกฤต (ระดับสูงขึ้น) 15 กุมภาพันธ์ 2569 "
                       "เวลา 19.30 น.")
