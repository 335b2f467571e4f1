"""Malformed records on safetour's own topics, as every internal consumer handles them.

The notifiers, the escalator and the dashboard read topics the worker writes (alerts, acks,
health); anything with access to the cluster can write there too. A record they cannot use is
handled as bad input is everywhere else: counted (``safetour_internal_rejects_total{topic,
consumer}``), logged at most once every 10 s per consumer with the count since the last line,
dead-lettered where the consumer writes anywhere (the notifiers and the escalator: the notify
DLQ, outcome ``malformed``), and the consumer goes on with the next record.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from schemas import Rejection

from .logs import ThrottledLog
from .metrics import Metrics

MALFORMED_VALUE_MAX: Final = 256 * 1024
"""Bytes of a malformed value kept in its notify-DLQ record (the topic takes 1 MiB)."""


@dataclass
class InternalRejects:
    """Counting and logging the malformed records one consumer skipped."""

    consumer: str
    metrics: Metrics
    log: ThrottledLog

    @classmethod
    def of(cls, consumer: str, metrics: Metrics, logger: logging.Logger) -> InternalRejects:
        return cls(consumer, metrics, ThrottledLog(logger))

    def count(self, topic: str, rejection: Rejection, where: str = "") -> None:
        self.metrics.internal_rejects.labels(topic, self.consumer).inc()
        self.log.note("%s: skipped a malformed record on %s%s: %s: %s", self.consumer, topic,
                      f" ({where})" if where else "", rejection.reason.value,
                      rejection.detail[:200])


def malformed_dlq_record(
    rejection: Rejection, consumer: str, *, value: bytes | None, topic: str, partition: int,
    offset: int, key: bytes | None, now: datetime | None = None,
) -> dict[str, Any]:
    """A notify-DLQ value for a record a notifier or the escalator could not read: outcome
    ``malformed``, the reason code and detail, where it came from, and the value (cut)."""
    raw = value or b""
    cut = len(raw) > MALFORMED_VALUE_MAX
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "channel": consumer,
        "outcome": "malformed",
        "reason": rejection.reason.value,
        "detail": rejection.detail,
        "attempts": 0,
        "idempotency_key": None,
        "alert": None,
        "source": {"topic": topic, "partition": partition, "offset": offset,
                   "key_b64": None if key is None else base64.b64encode(key).decode("ascii")},
        "value_b64": base64.b64encode(raw[:MALFORMED_VALUE_MAX]).decode("ascii"),
        "value_truncated_at": MALFORMED_VALUE_MAX if cut else None,
        "dead_lettered_at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
