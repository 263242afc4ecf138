"""The ``RENUM_NOTIFICATIONS`` settings dict, with documented defaults, read through one accessor."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Seconds a POST /api/notifications/ answer is kept for retries with the same
    # Idempotency-Key; after that the key may be used again.
    "IDEMPOTENCY_TTL_S": 24 * 3600,
    # Most recipients one POST /api/notifications/ may name in ``users``.
    "MAX_USERS_PER_REQUEST": 10_000,
}


def setting(name: str) -> Any:
    """Return ``settings.RENUM_NOTIFICATIONS[name]``, or its default when the project does not set it."""
    overrides = getattr(settings, "RENUM_NOTIFICATIONS", {})
    if name in overrides:
        return overrides[name]
    if name not in DEFAULTS:
        raise KeyError(f"unknown RENUM_NOTIFICATIONS setting {name!r}")
    return DEFAULTS[name]
