"""Worker heartbeats on ``safetour.health.v1``: silence must never look like calm.

A calm night and a dead worker look the same on the density and alerts topics when nothing
changes. Every worker therefore publishes a small record every few seconds (keyed by its
worker id), whatever the input, and the dashboard turns red when neither a heartbeat nor a
density record has arrived for ``SAFETOUR_DASHBOARD_STALE_S``:

    {"worker_id": "host:1234", "ts": "2026-02-16T13:00:05.000Z",
     "partitions": [0, 3], "watermarks": {"0": "2026-02-16T12:59:54.000Z", "3": null}}

``partitions`` are the sensor partitions the worker holds, ``watermarks`` their event-time
watermarks (null before the first reading). The topic has one partition and keeps a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, NamedTuple

import orjson

from schemas import Reason, Rejection, decode_json_object, format_ts

from .logs import ThrottledLog

log = logging.getLogger(__name__)

MAX_HEARTBEAT_BYTES: Final = 64 * 1024


class HeartbeatSnapshot(NamedTuple):
    """What a heartbeat says: which worker, its sensor partitions, their watermarks (ms)."""

    worker_id: str
    partitions: Iterable[int]
    watermarks_ms: Mapping[int, int | None]


def heartbeat_record(worker_id: str, partitions: Iterable[int],
                     watermarks_ms: Mapping[int, int | None], now_ms: int) -> bytes:
    """One value for the health topic (see the module docstring)."""
    return orjson.dumps({
        "worker_id": worker_id,
        "ts": format_ts(now_ms),
        "partitions": sorted(partitions),
        "watermarks": {str(p): None if ms is None else format_ts(ms)
                       for p, ms in sorted(watermarks_ms.items())},
    })


def decode_heartbeat(value: bytes | None) -> dict[str, Any] | Rejection:
    """A heartbeat the dashboard can use (``worker_id`` and ``ts`` strings), or why not."""
    doc = decode_json_object(value, MAX_HEARTBEAT_BYTES)
    if isinstance(doc, Rejection):
        return doc
    for key in ("worker_id", "ts"):
        v = doc.get(key)
        if not isinstance(v, str) or not 1 <= len(v) <= 128:
            return Rejection(Reason.SCHEMA, f"/{key}: must be a string of 1..128 characters")
    return doc


Send = Callable[[bytes, bytes], Awaitable[Any]]


async def run_heartbeat(send: Send, interval_s: float,
                        snapshot_fn: Callable[[], HeartbeatSnapshot], stop: asyncio.Event,
                        *, clock: Callable[[], float] = time.time) -> int:
    """Every ``interval_s`` until ``stop``: ``send(worker_id, heartbeat_record(...))`` of what
    ``snapshot_fn`` says now. A failed send or snapshot is logged (rate-limited) and the loop
    goes on: a heartbeat never stops the worker. Returns how many were sent."""
    if interval_s <= 0:
        raise ValueError("interval_s must be > 0")
    failures = ThrottledLog(log)
    sent = 0
    while not stop.is_set():
        try:
            snap = snapshot_fn()
            await send(snap.worker_id.encode(), heartbeat_record(
                snap.worker_id, snap.partitions, snap.watermarks_ms, round(clock() * 1000)))
            sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever it was, the next beat may work
            failures.note("heartbeat not sent: %r", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
    return sent
