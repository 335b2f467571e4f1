"""The end of a drill (``safetour run --drill``): every episode it left open is resolved.

A drill's worker publishes to the real alerts and CAP topics (``exercise: true``, alert_id
``drill-...``: agents/cli.py ``drill_settings``). When the drill ends (its scenario is over,
or SIGINT/SIGTERM) and its worker has stopped, :func:`end_drill` reads the real alerts topic
back from the drill's start and, for each drill episode still open there, publishes one
resolution, so no consumer (dashboard, notifiers, escalator, CAP readers) keeps a drill
episode open::

    {"alert_id": "drill-...", "status": "resolved", "level": "normal",
     "previous_level": <its last level>, "reason": "drill_ended", "seq": <its last seq + 1>,
     "exercise": true, "ts": <now>, "message": {"th": "สิ้นสุดการฝึกซ้อม: ...",
                                                "en": "Drill ended: ..."}, ...}

and its CAP counterpart (status Exercise, msgType Cancel referencing the episode's first
message, as every resolution: streams/cap.py). ``ts`` is the wall clock (the drill ends
now, not at an event time of its scenario), and never before the episode's last record.
Only records with ``exercise: true`` and an alert_id starting ``drill-`` are read, so a real
episode is never touched. Two drills run at the same time on one cluster share the alerts
topic: the first to end resolves the other's open episodes too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from schemas import Rejection, Zone, decode_alert, format_ts, parse_ts
from streams.cap import zone_to_cap
from streams.messages import alert_message

from .config import Settings

log = logging.getLogger(__name__)

__all__ = ["DRILL_ENDED", "drill_end_alert", "end_drill", "finish_drill", "is_drill_alert",
           "open_drill_episodes"]

DRILL_ENDED = "drill_ended"


def is_drill_alert(alert: Mapping[str, Any]) -> bool:
    return alert.get("exercise") is True and str(alert.get("alert_id", "")).startswith("drill-")


def _seq(alert: Mapping[str, Any]) -> int:
    seq = alert.get("seq")
    return int(seq) if isinstance(seq, int) and not isinstance(seq, bool) else 0


def open_drill_episodes(alerts: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The drill episodes still open after ``alerts`` (in topic order): alert_id -> its
    newest record (by ``seq``; a replayed repeat changes nothing)."""
    newest: dict[str, Mapping[str, Any]] = {}
    for a in alerts:
        if not is_drill_alert(a):
            continue
        alert_id = str(a["alert_id"])
        known = newest.get(alert_id)
        if known is not None and (known.get("status") == "resolved" or _seq(a) < _seq(known)):
            continue  # resolved stays resolved; an older record changes nothing
        newest[alert_id] = a
    return {k: v for k, v in newest.items() if v.get("status") != "resolved"}


def drill_end_alert(newest: Mapping[str, Any], zone: Zone | None, now_ms: int
                    ) -> dict[str, Any]:
    """The resolution of a drill episode whose newest record is ``newest``."""
    ts_ms = max(now_ms, parse_ts(newest["ts"], "/ts"))
    base = alert_message(
        name_th=zone.name_th if zone else str(newest["zone_id"]),
        name_en=zone.name_en if zone else str(newest["zone_id"]),
        level="normal", status="resolved", reason=DRILL_ENDED, density=None, eta_s=None,
        ts_ms=ts_ms)
    out = {k: v for k, v in newest.items()
           if k not in ("eta_critical_s", "eta_critical_range_s", "reminder", "trend")}
    out |= {"status": "resolved", "level": "normal",
            "previous_level": newest.get("level", "normal"), "reason": DRILL_ENDED,
            "ts": format_ts(ts_ms), "density": None, "occupancy": None, "exercise": True,
            "message": {"th": f"สิ้นสุดการฝึกซ้อม: {base['th']}",
                        "en": f"Drill ended: {base['en']}"}}
    if _seq(newest):
        out["seq"] = _seq(newest) + 1
    return out


async def _read_alerts(settings: Settings, since_ms: int) -> list[dict[str, Any]]:
    """The alerts topic from ``since_ms`` to its end now (unusable records skipped)."""
    from aiokafka import TopicPartition  # noqa: PLC0415

    from .topics import partitions_of, seek_since  # noqa: PLC0415

    cfg = settings.kafka
    topic = settings.topics.alerts
    tps = [TopicPartition(topic, p) for p in await partitions_of(cfg, topic)]
    consumer = cfg.consumer()
    await cfg.start(consumer)
    out: list[dict[str, Any]] = []
    try:
        consumer.assign(tps)
        await seek_since(consumer, tps, since_ms)
        ends = await consumer.end_offsets(tps)
        while True:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                return out
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for r in records:
                    alert = decode_alert(r.value)
                    if not isinstance(alert, Rejection):
                        out.append(alert)
    finally:
        await consumer.stop()


async def end_drill(settings: Settings, since_ms: int, *, now_ms: int | None = None
                    ) -> list[str]:
    """Resolve the drill episodes left open on the real alerts topic since ``since_ms``
    (the drill's start; its worker stopped): one resolution each on the alerts topic and
    its CAP message on the CAP topic. Returns their alert_ids."""
    zones = {z.zone_id: z for z in settings.load_registry()}
    still_open = open_drill_episodes(await _read_alerts(settings, since_ms))
    if not still_open:
        return []
    now = int(time.time() * 1000) if now_ms is None else now_ms
    cfg = settings.kafka
    async with cfg.running(cfg.producer()) as producer:
        for alert_id, newest in sorted(still_open.items()):
            zone = zones.get(str(newest["zone_id"]))
            end = drill_end_alert(newest, zone, now)
            key = str(end["zone_id"]).encode()
            await producer.send_and_wait(settings.topics.alerts, key=key,
                                         value=orjson.dumps(end))
            if zone is not None:
                await producer.send_and_wait(
                    settings.topics.alerts_cap, key=key, value=zone_to_cap(end, zone),
                    headers=[("content-type", b"application/cap+xml")])
            log.info("drill over: resolved %s (%s)", alert_id, end["zone_id"])
    return sorted(still_open)


def finish_drill(settings: Settings, since_ms: int, echo: Callable[[str], None]) -> None:
    """``safetour run --drill``'s last step, once its worker stopped: :func:`end_drill`,
    saying what it resolved; a failure is said, not raised (the drill is over anyway)."""
    try:
        ended = asyncio.run(end_drill(settings, since_ms))
    except Exception as exc:
        echo(f"could not resolve the drill's open episodes: {exc}; they stay open until "
             "each consumer's own expiry")
        return
    echo(f"drill over: {len(ended)} open drill episode(s) resolved "
         f"({', '.join(ended) or 'none open'})")
