"""Log output for the command line and the worker: text by default, JSON lines when
``SAFETOUR_LOG_FORMAT=json`` (for log shippers). Only the CLI configures logging; library
code just logs through named loggers."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
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


def logging_config(fmt: str, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``fmt`` ("text" or "json")."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "default"}},
        "root": {"level": "WARNING", "handlers": ["console"]},
        "loggers": {name: {"level": level} for name in ("agents", "streams", "schemas")},
    }


class Throttled:
    """Log repeated events at most once every ``every_s`` seconds, with the counts since the
    last line: a sender that keeps sending bad input must not flood the log."""

    def __init__(self, logger: logging.Logger, message: str, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.message = message
        self.every_s = every_s
        self._clock = clock
        self._last = -float("inf")
        self._pending: Counter[str] = Counter()

    def add(self, counts: Mapping[str, int]) -> bool:
        """Count ``counts``; log them (and what was held back) if it is time. True if logged."""
        self._pending.update(counts)
        now = self._clock()
        if not self._pending or now - self._last < self.every_s:
            return False
        self._last = now
        self.logger.warning("%s: %s", self.message, dict(sorted(self._pending.items())))
        self._pending.clear()
        return True
