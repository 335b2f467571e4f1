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


def density_message(
    *, name_th: str, name_en: str, level: str, status: str, density: float, ts_ms: int
) -> dict[str, str]:
    """The ``message`` object of a density alert."""
    th = (
        f"{name_th}: ความหนาแน่นของฝูงชน {density:.1f} คน/ตร.ม. ระดับ{LEVEL_TH[level]} "
        f"({STATUS_TH[status]}) {thai_datetime(ts_ms)}"
    )
    en = (
        f"{name_en}: crowd density {density:.1f} persons/m², level {level.upper()} "
        f"({status}) at {english_datetime(ts_ms)}"
    )
    return {"th": th, "en": en}
