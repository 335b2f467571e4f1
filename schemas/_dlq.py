"""Dead-letter records (dlq-record.v1.json): what was rejected, why, and from where.

One DLQ record per rejected *message*, however many of its items were rejected, so a DLQ
never grows faster than its input: the record carries the original value once (cut at
``MAX_DLQ_VALUE_BYTES``), the first ``MAX_DLQ_ITEMS`` rejected items (index, reason, JSON
pointer, detail) and a count per reason over all of them. For a value of ``n`` bytes the
record is at most about ``1.34 n + 40 KiB`` (base64, plus the bounded item list).
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from ._records import Rejection

MAX_DLQ_VALUE_BYTES: Final = 1024 * 1024
"""Original values longer than this are cut in the DLQ record (``value_truncated_at``)."""
MAX_DLQ_ITEMS: Final = 100
"""A DLQ record lists at most this many rejected items; ``counts`` covers all of them."""
MAX_DETAIL_CHARS: Final = 300
"""Details are cut to this many characters (a detail may quote a hostile value)."""


def _cut(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS - 1] + "…"


def dlq_record(
    rejections: Rejection | Sequence[Rejection],
    *,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None = None,
    key: bytes | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build the one DLQ record of a message from all its rejections (``now``: wall clock)."""
    rejs = [rejections] if isinstance(rejections, Rejection) else list(rejections)
    if not rejs:
        raise ValueError("a DLQ record needs at least one rejection")
    first = rejs[0]
    raw = value or b""
    truncated = len(raw) > MAX_DLQ_VALUE_BYTES
    if truncated:
        raw = raw[:MAX_DLQ_VALUE_BYTES]
    when = (now or datetime.now(UTC)).astimezone(UTC)
    counts = Counter(r.reason.value for r in rejs)
    return {
        "reason": first.reason.value,
        "detail": _cut(first.detail),
        "index": first.index,
        "items": [
            {"index": r.index, "reason": r.reason.value, "pointer": r.pointer,
             "detail": _cut(r.detail)}
            for r in rejs[:MAX_DLQ_ITEMS]
        ],
        "items_total": len(rejs),
        "counts": dict(counts),
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp_ms": timestamp_ms,
            "key_b64": None if key is None else base64.b64encode(key[:1024]).decode("ascii"),
        },
        "value_b64": base64.b64encode(raw).decode("ascii"),
        "value_truncated_at": MAX_DLQ_VALUE_BYTES if truncated else None,
        "dead_lettered_at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def encode_dlq_record(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


def dlq_headers(rejection: Rejection, topic: str, partition: int, offset: int) -> list[
    tuple[str, bytes]
]:
    """Kafka headers that let tools filter the DLQ without decoding values."""
    return [
        ("safetour-reason", rejection.reason.value.encode()),
        ("safetour-source", f"{topic}/{partition}/{offset}".encode()),
    ]
