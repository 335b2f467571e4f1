"""``safetour alerts tail``: print alerts as they arrive, coloured by level."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streams.messages import BANGKOK

from .kafka import KafkaTarget, as_config
from .topics import partitions_of

# The channels' drill marker (agents/delivery/notify.py DRILL_MARKER; tests/unit/test_drill.py
# holds them equal): shared modules do not import the delivery package.
DRILL_MARKER = "[ฝึกซ้อม / DRILL]"

COLOURS = {"normal": "32", "elevated": "33", "high": "38;5;208", "critical": "1;31"}


def _number(value: object) -> float | None:
    """``value`` if it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def format_alert(alert: dict[str, Any], *, colour: bool) -> str:
    """Three lines for a person. Any alert prints, whatever it holds: ``density`` null (a
    blind zone, a report-raised alert), a reason or status it does not know, fields missing,
    of another type or unknown (the alert contract is open)."""
    level = str(alert.get("level", "?"))
    try:
        when = datetime.fromisoformat(str(alert["ts"])).astimezone(BANGKOK).strftime("%H:%M:%S")
    except (KeyError, ValueError, OverflowError):
        when = "--:--:--"
    head = f"{level.upper():<9}"
    if colour:
        head = f"\x1b[{COLOURS.get(level, '0')}m{head}\x1b[0m"
    msg = alert.get("message")
    if not isinstance(msg, dict):
        msg = {}
    density = _number(alert.get("density"))
    shown = f"{density:6.2f} p/m²" if density is not None else f"{'--':>6} p/m²"
    why = str(alert.get("reason", "density"))
    extra = "" if why == "density" else f"  [{why}]"
    seq = alert.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool):
        extra += f"  #{seq}"
    eta = _number(alert.get("eta_critical_s"))
    if eta is not None and alert.get("status") != "resolved":
        extra += f"  critical in ~{round(eta / 60)} min"
    if alert.get("reminder") is True:
        extra += "  (reminder)"
    if alert.get("exercise") is True:  # a drill's alert on the real alerts topic
        extra += f"  {DRILL_MARKER}"
    return (
        f"{when} ICT {head}{alert.get('status', '?')!s:<12}"
        f"{alert.get('zone_id', '?')!s:<20}{shown}{extra}\n"
        f"    {msg.get('th', '')}\n    {msg.get('en', '')}"
    )


async def tail_alerts(
    kafka: KafkaTarget,
    topic: str,
    *,
    from_beginning: bool = False,
    max_alerts: int | None = None,
    timeout_s: float | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    on_alert: Callable[[dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Print alerts until ``max_alerts`` were seen, ``timeout_s`` passed or ``stop`` is set."""
    stream = out or sys.stdout
    colour = stream.isatty()
    cfg = as_config(kafka)
    tps = [TopicPartition(topic, p) for p in await partitions_of(cfg, topic)]
    consumer = cfg.consumer()
    await cfg.start(consumer)
    seen = 0
    try:
        consumer.assign(tps)
        try:
            await asyncio.wait_for(consumer.seek_to_beginning(*tps) if from_beginning
                                   else consumer.seek_to_end(*tps), cfg.connect_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise cfg.unreachable(exc if str(exc) else "no answer within "
                                  f"{cfg.connect_timeout_s:.3g}s") from None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while max_alerts is None or seen < max_alerts:
            if stop is not None and stop.is_set():
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            wait_ms = 500 if remaining is None else int(min(remaining, 0.5) * 1000)
            batches = await consumer.getmany(timeout_ms=max(wait_ms, 1))
            for rec in (r for records in batches.values() for r in records):
                if max_alerts is not None and seen >= max_alerts:
                    break  # a fetch may bring more than are still wanted
                try:
                    alert = orjson.loads(rec.value or b"null")
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(alert, dict):
                    continue
                seen += 1
                if as_json:
                    stream.write(orjson.dumps(alert).decode() + "\n")
                else:
                    stream.write(format_alert(alert, colour=colour) + "\n")
                stream.flush()
                if on_alert is not None:
                    on_alert(alert)
    finally:
        await consumer.stop()
    return seen
