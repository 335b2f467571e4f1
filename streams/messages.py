"""Alert texts for people: Thai and English, times in Asia/Bangkok (UTC+7, no DST).

Thai dates use the Buddhist Era (CE + 543) in the style of provincial notices:
``15 กุมภาพันธ์ 2569 เวลา 19.30 น.``
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Final

BANGKOK: Final = timezone(timedelta(hours=7), "ICT")

TH_MONTHS: Final = (
    "มกราคม", "กุมภาพันธ์", "มีนาคม", "เมษายน", "พฤษภาคม", "มิถุนายน",
    "กรกฎาคม", "สิงหาคม", "กันยายน", "ตุลาคม", "พฤศจิกายน", "ธันวาคม",
)
LEVEL_TH: Final = {"normal": "ปกติ", "elevated": "เฝ้าระวัง", "high": "สูง", "critical": "วิกฤต"}
STATUS_TH: Final = {
    "raised": "แจ้งเตือนใหม่",
    "escalated": "ระดับสูงขึ้น",
    "deescalated": "ระดับลดลง",
    "resolved": "กลับสู่ภาวะปกติ",
    "updated": "ปรับปรุงข้อมูล",
}


def bangkok(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(BANGKOK)


def thai_datetime(ts_ms: int) -> str:
    """``15 กุมภาพันธ์ 2569 เวลา 19.30 น.`` (Bangkok time, Buddhist Era year)."""
    t = bangkok(ts_ms)
    return f"{t.day} {TH_MONTHS[t.month - 1]} {t.year + 543} เวลา {t:%H.%M} น."


def english_datetime(ts_ms: int) -> str:
    """``19:30 ICT, 15 Feb 2026`` (Bangkok time)."""
    t = bangkok(ts_ms)
    return f"{t:%H:%M} ICT, {t.day} {t:%b %Y}"


CATEGORY_TH: Final = {
    "crush": "ฝูงชนเบียดอัด", "fire": "ไฟไหม้", "violence": "เหตุทะเลาะวิวาท",
    "injury": "ผู้บาดเจ็บ", "medical": "เหตุฉุกเฉินทางการแพทย์", "overcrowding": "คนแออัด",
    "lost_person": "คนพลัดหลง", "other": "เหตุอื่น ๆ",
}
CATEGORY_EN: Final = {
    "crush": "crowd crush", "fire": "fire", "violence": "violence", "injury": "injury",
    "medical": "medical emergency", "overcrowding": "overcrowding", "lost_person": "lost person",
    "other": "incident",
}


def alert_message(
    *, name_th: str, name_en: str, level: str, status: str, reason: str,
    density: float | None, eta_s: float | None, ts_ms: int, report: str | None = None,
    neighbour: tuple[str, str] | None = None,
) -> dict[str, str]:
    """The ``message`` object of an alert: what, where, how bad, since when, what next.
    ``neighbour``: (Thai, English) name of the zone a spill-over comes from."""
    th_parts = [f"{name_th}:"]
    en_parts = [f"{name_en}:"]
    if reason == "spillover" and neighbour is not None:
        th_parts.append(f"ฝูงชนจาก{neighbour[0]}กำลังไหลเข้ามา")
        en_parts.append(f"crowd from {neighbour[1]} flowing in,")
    if reason == "sensing_lost":
        th_parts.append("ไม่ได้รับข้อมูลจากเซ็นเซอร์ทุกตัว มองไม่เห็นสถานการณ์ในพื้นที่นี้แล้ว "
                        "ให้ถือว่าระดับเดิมยังคงอยู่ ส่งเจ้าหน้าที่ไปตรวจสอบ")
        en_parts.append("every sensor has stopped: the zone can no longer be seen; treat the "
                        "level as standing and send staff to look,")
    elif status == "updated" and reason == "density":
        th_parts.append("กลับมาได้รับข้อมูลจากเซ็นเซอร์แล้ว")
        en_parts.append("sensor data is back,")
    if reason == "report" and report is not None:
        th_parts.append(f"มีรายงาน{CATEGORY_TH.get(report, 'เหตุ')}")
        en_parts.append(f"{CATEGORY_EN.get(report, 'incident')} reported,")
    if density is not None:
        th_parts.append(f"ความหนาแน่นของฝูงชน {density:.1f} คน/ตร.ม.")
        en_parts.append(f"crowd density {density:.1f} persons/m²,")
    th_parts.append(f"ระดับ{LEVEL_TH[level]} ({STATUS_TH[status]})")
    en_parts.append(f"level {level.upper()} ({status})")
    if eta_s is not None and status != "resolved":
        minutes = max(1, round(eta_s / 60))
        if reason == "spillover":
            th_parts.append(f"หากคนยังไหลเข้าในอัตรานี้ จะถึงระดับวิกฤตในอีกประมาณ {minutes} นาที")
            en_parts.append(f"- at this inflow critical in about {minutes} min")
        else:
            th_parts.append(f"หากยังเพิ่มขึ้นในอัตรานี้ จะถึงระดับวิกฤตในอีกประมาณ {minutes} นาที")
            en_parts.append(f"- at this trend critical in about {minutes} min")
    th_parts.append(thai_datetime(ts_ms))
    en_parts.append(f"at {english_datetime(ts_ms)}")
    return {"th": " ".join(th_parts), "en": " ".join(en_parts)}
