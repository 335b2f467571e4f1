"""Log output for the command line and the worker: text by default, JSON lines when
``SAFETOUR_LOG_FORMAT=json`` (for log shippers). Only the CLI configures logging; library
code just logs through named loggers."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, and any exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


KAFKA_OUTAGE_FILTER = "kafka_outage"


def logging_config(fmt: str, level: str, *, kafka_errors: str = "throttle") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``fmt`` ("text" or "json"). The Kafka clients'
    connection errors go through :class:`KafkaOutageFilter`: ``kafka_errors="throttle"``
    (long-running processes) logs them once every 10 s with a count, ``"quiet"`` (one-shot
    tools, which say so themselves in one line) not at all."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {KAFKA_OUTAGE_FILTER: _outage_filter(kafka_errors)},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "default",
                                 "filters": [KAFKA_OUTAGE_FILTER]}},
        "root": {"level": "WARNING", "handlers": ["console"]},
        "loggers": {name: {"level": level} for name in ("agents", "streams", "schemas")},
    }


def faust_logging_config(level: str) -> dict[str, Any]:
    """For ``faust.Worker(logging_config=...)`` in text format: faust's own console handler
    and format (``[^Worker]: Ready``), with :class:`KafkaOutageFilter` on it."""
    return {
        "merge": True,
        "filters": {KAFKA_OUTAGE_FILTER: _outage_filter("throttle")},
        "handlers": {"default": {"level": level, "class": "colorlog.StreamHandler",
                                 "formatter": "colored", "filters": [KAFKA_OUTAGE_FILTER]}},
    }


def _outage_filter(mode: str) -> dict[str, Any]:
    if mode not in ("throttle", "quiet"):
        raise ValueError(f"kafka_errors={mode!r}: throttle or quiet")
    return {"()": f"{__name__}.KafkaOutageFilter", "quiet": mode == "quiet"}


# Loggers of the Kafka clients, and what their connection-error records say.
KAFKA_LOGGERS = ("aiokafka", "faust", "mode")
CONNECTION_ERROR_MARKERS = (
    "Unable connect to", "Unable to bootstrap", "Connect call failed", "Connection refused",
    "KafkaConnectionError", "NodeNotReadyError", "RequestTimedOutError", "KafkaTimeoutError",
    "Unable to update metadata", "Unable to request metadata", "Failed fetch messages",
    "CoordinatorNotAvailable", "NotCoordinator", "Coordinator dead", "Connection reset",
    "Broken pipe", "ConnectionResetError", "timed out",
    # A missing ACL or a refused login: the tools report it in one line of their own
    # (agents/kafka.py), long-running processes once every 10 s.
    "is not authorized", "AuthorizationFailed", "SaslAuthenticationFailed",
    "Authentication failed",
)


def is_kafka_connection_error(record: logging.LogRecord) -> bool:
    """A record of aiokafka or faust that reports a broker it cannot reach."""
    if not record.name.startswith(KAFKA_LOGGERS) or record.levelno < logging.WARNING:
        return False
    if record.exc_info and record.exc_info[0] is not None:
        from aiokafka.errors import (  # noqa: PLC0415
            KafkaConnectionError,
            KafkaTimeoutError,
            NodeNotReadyError,
            RequestTimedOutError,
        )

        if issubclass(record.exc_info[0], (OSError, TimeoutError, KafkaConnectionError,
                                           KafkaTimeoutError, NodeNotReadyError,
                                           RequestTimedOutError)):
            return True
    try:
        text = record.getMessage()
    except Exception:  # a record that cannot format is not ours to judge
        return False
    return any(m in text for m in CONNECTION_ERROR_MARKERS)


class KafkaOutageFilter(logging.Filter):
    """While Kafka is down, its clients log the same connection errors several times a
    second. This lets one such record through every ``every_s`` seconds, saying how many it
    held back since the last; every other record passes untouched. ``quiet``: none pass."""

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 *, quiet: bool = False) -> None:
        super().__init__()
        self.every_s = every_s
        self.quiet = quiet
        self._clock = clock
        self._next = -float("inf")
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_kafka_connection_error(record):
            return True
        if self.quiet:
            return False
        now = self._clock()
        if now < self._next:
            self._held += 1
            return False
        self._next = now + self.every_s
        if self._held:
            # getMessage() first: the args belong to the original message. No args left:
            # (), not None, which faust's formatter (mode's) would make (None,).
            record.msg = (f"{record.getMessage()} (and {self._held} more Kafka connection "
                          f"errors held back since the last such line)")
            record.args = ()
            self._held = 0
        return True


@dataclass
class ThrottledLog:
    """Warnings about repeated events at most once every ``every_s`` seconds, with what was
    held back since the last line: a sender that keeps sending bad input, or a topic that
    keeps holding bad records, must not flood the log."""

    logger: logging.Logger
    every_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _last: float | None = field(default=None, init=False)
    _count: int = field(default=0, init=False)
    _pending: Counter[str] = field(default_factory=Counter, init=False)

    def _due(self) -> bool:
        now = self.clock()
        if self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        return True

    def note(self, msg: str, *args: object) -> bool:
        """Count one occurrence; log it (with the count since the last line) if due."""
        self._count += 1
        if not self._due():
            return False
        self.logger.warning("%s (%d since the last such line)", msg % args, self._count)
        self._count = 0
        return True

    def add(self, message: str, counts: Mapping[str, int]) -> bool:
        """Count ``counts``; log them all since the last line, after ``message``, if due."""
        self._pending.update(counts)
        if not self._pending or not self._due():
            return False
        self.logger.warning("%s: %s", message, dict(sorted(self._pending.items())))
        self._pending.clear()
        return True
