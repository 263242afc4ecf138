"""Structured logging: connection and user ids on every realtime log line; a JSON formatter.

The consumer sets the context variables when a socket connects; every log call made while
handling that socket (its task and what it awaits) carries them, without passing them around.
"""

from __future__ import annotations

import contextvars
import logging
from datetime import UTC, datetime

import orjson

connection_id: contextvars.ContextVar[str] = contextvars.ContextVar("connection_id", default="-")
user_id: contextvars.ContextVar[str] = contextvars.ContextVar("user_id", default="-")


class ConnectionContextFilter(logging.Filter):
    """Adds ``connection_id`` and ``user_id`` of the socket being handled to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record; never drops it."""
        record.connection_id = connection_id.get()
        record.user_id = user_id.get()
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line with time, level, logger, message and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        data = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()
