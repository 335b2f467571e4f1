"""Offline replay: the worker's pipeline over JSONL files, with no broker and no wall clock.

Each line of the events file is one message value of the sensor topic (an event or a gateway
batch); each line of the reports file one report. Lines are read in file order, the two files
merged by event time, as if they arrived in that order. At the end of the input, every window
still open is closed (the event-time clock runs past the last reading), so the output holds
all that the worker would have published. Every time in the output derives from event time:
the same input gives byte-identical output.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import orjson

from schemas import Zone

from .alarm import AlarmConfig
from .engine import DensityEngine
from .pipeline import DEFAULT_MAX_SKEW_MS, Pipeline
from .records import Outputs, OutRecord, SourceMessage

log = logging.getLogger(__name__)

BATCH_LINES = 2000


@dataclass(slots=True)
class ReplayStats:
    lines: int = 0
    events: int = 0
    alerts: int = 0
    densities: int = 0
    dead_lettered: int = 0


def _line_ts(line: bytes) -> int:
    """Merge key: the line's event time (ms), 0 when it has none (bad lines go first)."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return 0
    items = doc if isinstance(doc, list) else [doc]
    for item in items:
        ts = item.get("ts") if isinstance(item, dict) else None
        if isinstance(ts, int) and not isinstance(ts, bool):
            return ts
        if isinstance(ts, str):
            try:
                return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
            except ValueError:
                return 0
    return 0


LOOKAHEAD = 16
"""A line's merge key is its time, but never later than any of the next LOOKAHEAD lines of its
file (sensor messages), or than that plus the skew (reports, which phones send late and out
of order): one line stamped in the year 2200 cannot hold back the rest of its file (the other
file's lines would all be merged ahead of it, out of their event-time order)."""


def _lines(path: Path, kind: str) -> Iterator[tuple[int, int, str, int, bytes]]:
    window: deque[tuple[int, int, bytes]] = deque()
    prio = 0 if kind == "events" else 1
    slack = 0 if kind == "events" else DEFAULT_MAX_SKEW_MS
    last = [0]

    def head() -> tuple[int, int, str, int, bytes]:
        ts, n, line = window.popleft()
        # Lines without a time (0: not JSON, say) go where their neighbours go.
        later = [t for t, _, _ in window if t > 0]
        own = [ts, *(t + slack for t in later)] if ts > 0 else later
        key = min(own) if own else last[0]
        last[0] = key
        return key, prio, kind, n, line

    with path.open("rb") as f:
        for n, raw in enumerate(f):
            line = raw.rstrip(b"\r\n")
            if line.strip():
                window.append((_line_ts(line), n, line))
                if len(window) > LOOKAHEAD:
                    yield head()
    while window:
        yield head()


def replay(
    pipeline: Pipeline,
    events: Path,
    out: IO[bytes],
    *,
    reports: Path | None = None,
    density_out: IO[bytes] | None = None,
    dlq_out: IO[bytes] | None = None,
    progress: Callable[[ReplayStats], None] | None = None,
) -> ReplayStats:
    """Run the files through ``pipeline``; write alerts (and optionally densities and DLQ
    records) as JSON lines. ``pipeline`` should be built with an event-time clock."""
    stats = ReplayStats()
    sources: list[Iterable[tuple[int, int, str, int, bytes]]] = [_lines(events, "events")]
    if reports is not None:
        sources.append(_lines(reports, "reports"))
    merged = heapq.merge(*sources, key=lambda r: (r[0], r[1]))

    def write(o: Outputs) -> None:
        stats.alerts += _dump(out, o.alerts)
        stats.densities += _dump(density_out, o.density)
        stats.dead_lettered += _dump(dlq_out, o.dlq)
        stats.events += o.events_in

    pending: list[SourceMessage] = []
    for _ts, _prio, kind, n, line in merged:
        stats.lines += 1
        if kind == "events":
            pending.append(SourceMessage(str(events), 0, n, None, None, line))
            if len(pending) >= BATCH_LINES:
                write(pipeline.process_sensor_batch(pending))
                pending = []
        else:
            if pending:
                write(pipeline.process_sensor_batch(pending))
                pending = []
            write(pipeline.process_report_batch([SourceMessage(str(reports), 0, n, None, None,
                                                               line)]))
        if progress is not None and stats.lines % 10_000 == 0:
            progress(stats)
    if pending:
        write(pipeline.process_sensor_batch(pending))
    write(pipeline.finish())
    if progress is not None:
        progress(stats)
    return stats


def _dump(f: IO[bytes] | None, records: list[OutRecord]) -> int:
    if f is not None:
        for r in records:
            f.write(orjson.dumps(orjson.loads(r.value), option=orjson.OPT_SORT_KEYS) + b"\n")
    return len(records)


def replay_pipeline(
    zones: Iterable[Zone], engine: DensityEngine, alarm: AlarmConfig | None = None
) -> Pipeline:
    """A pipeline for replay: its DLQ records are stamped with the newest event time seen,
    not the wall clock, so the output is repeatable."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    def now() -> datetime:
        return epoch + timedelta(milliseconds=max(engine.newest_event_ms(), 0))

    return Pipeline(zones, engine=engine, clock=now, alarm=alarm)
