"""The ``RENUM_NOTIFICATIONS`` settings dict, with documented defaults, read through the
project's one accessor (``realtime.conf.AppSettings``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from realtime.conf import AppSettings

DEFAULTS: dict[str, Any] = {
    # Seconds a POST /api/notifications/ answer is kept for retries with the same
    # Idempotency-Key; after that the key may be used again.
    "IDEMPOTENCY_TTL_S": 24 * 3600,
    # Most recipients one POST /api/notifications/ may name in ``users``.
    "MAX_USERS_PER_REQUEST": 10_000,
}


setting: Callable[[str], Any] = AppSettings("RENUM_NOTIFICATIONS", DEFAULTS).get
