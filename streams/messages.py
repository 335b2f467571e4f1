"""Alert texts for people: Thai and English, times in Asia/Bangkok (UTC+7, no DST).

Thai dates use the Buddhist Era (CE + 543) in the style of provincial notices:
``15 กุมภาพันธ์ 2569 เวลา 19.30 น.``

A forecast says its range, ``critical in about 8 min (6–11 min)``; a range whose latest end
is more than ``WIDE_RANGE`` times its earliest is called very uncertain, and one with no
latest end (the slope's lower bound is not rising) says the latest cannot be told.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Final

BANGKOK: Final = timezone(timedelta(hours=7), "ICT")
DRILL_MARKER: Final = "[ฝึกซ้อม / DRILL]"
"""What every channel puts on a drill's alert (agents/delivery/notify.py holds the same)."""
WIDE_RANGE: Final = 3.0
"""An ETA range whose latest end is more than this many times its earliest is very wide."""

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
INDICATOR_TH: Final = {
    "rate_of_rise": "ความหนาแน่นของฝูงชนเพิ่มขึ้นเร็วผิดปกติ",
    "flow_breakdown": "ทางออกระบายคนได้น้อยลงขณะที่คนยังเข้ามาเพิ่ม (การไหลของฝูงชนติดขัด)",
    "counter_flow": "มีฝูงชนหนาแน่นเดินสวนทางกันขณะที่พื้นที่แน่นขึ้น",
}
INDICATOR_EN: Final = {
    "rate_of_rise": "the crowd density is rising fast,",
    "flow_breakdown": "the outflow has broken down while people keep arriving,",
    "counter_flow": "two dense streams are walking against each other as the zone fills,",
}
CATEGORY_EN: Final = {
    "crush": "crowd crush", "fire": "fire", "violence": "violence", "injury": "injury",
    "medical": "medical emergency", "overcrowding": "overcrowding", "lost_person": "lost person",
    "other": "incident",
}


def _minutes(seconds: float) -> int:
    return round(seconds / 60)


def eta_texts(eta_s: float, eta_range: tuple[float, float | None] | None, *,
              inflow: bool = False) -> tuple[str, str]:
    """``(th, en)``: when critical comes at this trend (``inflow``: at this inflow from a
    neighbour, a spill-over), with the forecast's range."""
    minutes = max(1, _minutes(eta_s))
    if inflow:
        th = f"หากคนยังไหลเข้าในอัตรานี้ จะถึงระดับวิกฤตในอีกประมาณ {minutes} นาที"
        en = f"- at this inflow critical in about {minutes} min"
    else:
        th = f"หากยังเพิ่มขึ้นในอัตรานี้ จะถึงระดับวิกฤตในอีกประมาณ {minutes} นาที"
        en = f"- at this trend critical in about {minutes} min"
    if eta_range is None:
        return th, en
    lo = min(_minutes(eta_range[0]), minutes)
    if eta_range[1] is None:
        return (th + f" (เร็วที่สุด {lo} นาที ช้าที่สุดประเมินไม่ได้)",
                en + f" ({lo} min at the earliest; the latest cannot be told)")
    hi = max(_minutes(eta_range[1]), minutes)
    if lo == hi:
        return th, en
    if eta_range[1] > WIDE_RANGE * max(eta_range[0], 60.0):
        return (th + f" ({lo}–{hi} นาที ยังไม่แน่นอนมาก)",
                en + f" ({lo}–{hi} min, very uncertain)")
    return th + f" ({lo}–{hi} นาที)", en + f" ({lo}–{hi} min)"


def alert_message(
    *, name_th: str, name_en: str, level: str, status: str, reason: str,
    density: float | None, eta_s: float | None, ts_ms: int, report: str | None = None,
    hot: tuple[str, float] | None = None,
    eta_range: tuple[float, float | None] | None = None, estimate: float | None = None,
    neighbour: tuple[str, str] | None = None,
) -> dict[str, str]:
    """The ``message`` object of an alert: what, where, how bad, since when, what next.
    ``eta_range``: the forecast's [earliest, latest] (s; latest None: unbounded);
    ``estimate``: the rising-edge estimate the level was raised on, when the published
    density (a trailing mean) is below that level; ``neighbour``: (Thai, English) name of
    the zone a spill-over comes from."""
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
    if reason in INDICATOR_TH and status != "resolved":
        th_parts.append(INDICATOR_TH[reason])
        en_parts.append(INDICATOR_EN[reason])
    if reason == "report" and report is not None:
        th_parts.append(f"มีรายงาน{CATEGORY_TH.get(report, 'เหตุ')}")
        en_parts.append(f"{CATEGORY_EN.get(report, 'incident')} reported,")
    if reason == "hotspot" and hot is not None and status != "resolved":
        th_parts.append(f"มีจุดคนหนาแน่นภายในพื้นที่ ที่ช่อง {hot[0]} {hot[1]:.1f} คน/ตร.ม. "
                        "แม้ค่าเฉลี่ยทั้งพื้นที่ยังต่ำ")
        en_parts.append(f"dense pocket in grid cell {hot[0]}: {hot[1]:.1f} persons/m² "
                        "while the zone average is lower,")
    if density is not None and estimate is not None:
        th_parts.append(f"ความหนาแน่นของฝูงชน {density:.1f} คน/ตร.ม. และเพิ่มขึ้นอย่างรวดเร็ว "
                        f"(ประเมินว่าขณะนี้ {estimate:.1f})")
        en_parts.append(f"crowd density {density:.1f} persons/m² and rising fast "
                        f"(estimated {estimate:.1f} now),")
    elif density is not None:
        th_parts.append(f"ความหนาแน่นของฝูงชน {density:.1f} คน/ตร.ม.")
        en_parts.append(f"crowd density {density:.1f} persons/m²,")
    th_parts.append(f"ระดับ{LEVEL_TH[level]} ({STATUS_TH[status]})")
    en_parts.append(f"level {level.upper()} ({status})")
    if eta_s is not None and status != "resolved":
        th_eta, en_eta = eta_texts(eta_s, eta_range, inflow=reason == "spillover")
        th_parts.append(th_eta)
        en_parts.append(en_eta)
    th_parts.append(thai_datetime(ts_ms))
    en_parts.append(f"at {english_datetime(ts_ms)}")
    return {"th": " ".join(th_parts), "en": " ".join(en_parts)}
