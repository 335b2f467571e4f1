"""Dead-letter records (dlq-record.v1.json): what was rejected, why, and from where."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from ._records import Rejection

MAX_DLQ_VALUE_BYTES: Final = 1024 * 1024
"""Original values longer than this are cut in the DLQ record (``value_truncated_at``)."""


def dlq_record(
    rejection: Rejection,
    *,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None = None,
    key: bytes | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build the DLQ record for one rejection (``now`` is wall-clock time, UTC)."""
    raw = value or b""
    truncated = len(raw) > MAX_DLQ_VALUE_BYTES
    if truncated:
        raw = raw[:MAX_DLQ_VALUE_BYTES]
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "reason": rejection.reason.value,
        "detail": rejection.detail,
        "index": rejection.index,
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp_ms": timestamp_ms,
            "key_b64": None if key is None else base64.b64encode(key).decode("ascii"),
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
