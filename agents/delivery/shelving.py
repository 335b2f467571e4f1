"""Shelving: an operator silences a zone's notifications for a bounded time, with a reason.

    safetour shelve ZONE --for 30m --reason "..."   (at most 4 h)
    safetour unshelve ZONE
    safetour shelves                                the zones shelved now

Each command writes one record to ``safetour.shelves.v1`` (keyed by zone_id, kept 90 days:
the audit trail; its parsing is agents/shelves.py, which the dashboard shares)::

    {"zone_id": "night-bazaar", "action": "shelve", "by": "somchai",
     "at": "2026-02-16T13:00:00.000Z", "until": "2026-02-16T13:30:00.000Z",
     "reason": "stage rehearsal, crowd expected"}

``action`` is ``shelve`` or ``unshelve`` (then ``until`` is ``at``); a later record of a zone
replaces the earlier one. A shelf ends by itself at ``until``: no command is needed, and no
record is written then (a reader compares ``until`` with its clock). The records are in UTC;
what the commands print for people is in Bangkok time (``20:30 ICT, 16 Feb 2026``:
:func:`shelved_text`, :func:`shelf_line`).

What a shelf suppresses: the notify channels' deliveries for the zone below ``critical``.
Critical alerts always go out (safety first: the operations centre hears a crush whatever an
operator shelved), resolutions always go out, and nothing else changes: the worker keeps
alarming, the alerts topic, the CAP topic, the dashboard and the escalator see every alert.
When the shelf ends, each episode of the zone still open whose records were held back is sent
once, its newest record (marked ``"unshelved": true``), so a channel learns a zone that rose
during the shelf is still up (an episode whose newest record went out, a critical one, is
not sent again). A notifier restarted during a shelf rebuilds what it held back as it
rebuilds its routing (agents/delivery/routing.py): it reads each partition again from 24 h
ago up to its committed offset without sending, and a routed record counts as held back when
a shelf of its zone held at the record's Kafka timestamp (:meth:`Shelves.held_at`, from the
shelves it read back, 4 h). So when the shelf ends, the restarted notifier sends the same
catch-up, with the same idempotency keys; if an earlier run already sent it (the shelf ended
before the restart) the receivers drop it as a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from schemas import Reason, Rejection, SafetourError, format_ts, parse_ts
from streams.messages import english_datetime

from ..logs import ThrottledLog
from ..shelves import LOOKBACK_S, MAX_SHELF_S, Shelf, Shelves

if TYPE_CHECKING:
    from ..rejects import InternalRejects

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h`` as seconds: more than 0, at most 4 h."""
    m = _DURATION.match(text)
    if m is None:
        raise SafetourError(f"--for {text!r}: give a duration like 45s, 30m or 2h")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0 or seconds > MAX_SHELF_S:
        raise SafetourError(f"--for {text!r}: a shelf lasts more than 0 and at most "
                            f"{MAX_SHELF_S // 3600} h")
    return seconds


def shelf_record(zone_id: str, *, action: str, by: str, now_s: float,
                 for_s: float = 0.0, reason: str = "") -> dict[str, Any]:
    """A value for the shelves topic (the checks a user's input gets: SafetourError)."""
    if action not in ("shelve", "unshelve"):
        raise SafetourError(f"unknown action {action!r}")
    reason = reason.strip()
    if action == "shelve":
        if not reason:
            raise SafetourError("--reason: say why the zone is shelved (it is recorded)")
        if not 0 < for_s <= MAX_SHELF_S:
            raise SafetourError(f"a shelf lasts more than 0 and at most "
                                f"{MAX_SHELF_S // 3600} h")
    if not by.strip():
        raise SafetourError("--by: who shelves the zone")
    at_ms = int(now_s * 1000)
    until_ms = at_ms + int(for_s * 1000) if action == "shelve" else at_ms
    return {"zone_id": zone_id, "action": action, "by": by.strip(), "at": format_ts(at_ms),
            "until": format_ts(until_ms), "reason": reason}


def shelved_text(record: Mapping[str, Any]) -> str:
    """What ``safetour shelve`` says (its record's ``until`` in Bangkok time)."""
    until = english_datetime(parse_ts(record["until"], "/until"))
    return (f"{record['zone_id']} shelved by {record['by']} until {until} "
            f"({record['reason']}): notifications below critical are held back; critical "
            "alerts and resolutions still go out")


def shelf_line(shelf: Shelf) -> str:
    """One row of ``safetour shelves`` (times in Bangkok time)."""
    return (f"{shelf.zone_id}  until {english_datetime(shelf.until_ms)}  by {shelf.by} "
            f"(since {english_datetime(shelf.at_ms)}): {shelf.reason}")


def holdable(alert: Mapping[str, Any]) -> bool:
    """A shelf may hold this record back: not critical, not a resolution."""
    return alert.get("status") != "resolved" and alert.get("level") != "critical"


def suppressed(alert: Mapping[str, Any], shelves: Shelves, now_s: float) -> Shelf | None:
    """The shelf that holds this record back from the channels, or None (critical alerts and
    resolutions are never held back)."""
    if not holdable(alert):
        return None
    return shelves.active(str(alert.get("zone_id")), now_s)


async def publish_shelf(kafka: Any, topic: str, record: Mapping[str, Any]) -> None:
    from ..kafka import as_config  # noqa: PLC0415

    cfg = as_config(kafka)
    async with cfg.running(cfg.producer()) as producer:
        await producer.send_and_wait(topic, key=str(record["zone_id"]).encode(),
                                     value=orjson.dumps(record))


async def follow_shelves(kafka: Any, topic: str, shelves: Shelves, stop: asyncio.Event,
                         caught_up: asyncio.Event | None = None, *,
                         rejects: InternalRejects | None = None) -> None:
    """Read the shelves topic from the longest shelf ago into ``shelves`` until ``stop``
    (``caught_up`` is set once the end of the topic at the start is read), each record judged
    by its Kafka timestamp (agents/shelves.py); one it cannot use is skipped, counted and
    logged through ``rejects`` (logged only, without). Without the topic (an older
    deployment) nothing is shelved, and it says so."""
    from aiokafka import TopicPartition  # noqa: PLC0415

    from ..kafka import as_config  # noqa: PLC0415
    from ..topics import partitions_of, seek_since  # noqa: PLC0415

    cfg = as_config(kafka)
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(cfg, topic)]
    except SafetourError as exc:
        log.warning("shelving is off: %s", exc)
        if caught_up is not None:
            caught_up.set()
        return
    consumer = cfg.consumer()
    await cfg.start(consumer)
    throttled = ThrottledLog(log)
    try:
        consumer.assign(tps)
        await seek_since(consumer, tps, int((time.time() - LOOKBACK_S) * 1000))
        ends = await consumer.end_offsets(tps)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for r in records:
                    bad = shelves.apply(r.value, ts_ms=r.timestamp, now_s=time.time())
                    if bad is None:
                        continue
                    if rejects is not None:
                        rejects.count(topic, Rejection(Reason.SCHEMA, bad),
                                      f"{r.partition}/{r.offset}")
                    else:
                        throttled.note("shelves %d/%d: %s (skipped)", r.partition,
                                       r.offset, bad)
            if caught_up is not None and not caught_up.is_set():
                positions = [await consumer.position(tp) for tp in tps]
                if all(at >= ends[tp] for at, tp in zip(positions, tps, strict=True)):
                    caught_up.set()
    except Exception as exc:  # shelving stops; notifying goes on (it only silences)
        log.warning("shelving is off: reading %s failed: %s", topic, exc)
        if caught_up is not None:
            caught_up.set()
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


async def read_shelves(kafka: Any, topic: str) -> Shelves:
    """The shelves as the topic says now (``safetour shelves``)."""
    shelves = Shelves()
    stop, done = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(follow_shelves(kafka, topic, shelves, stop, done))
    waiter = asyncio.create_task(done.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    waiter.cancel()
    await task
    return shelves
