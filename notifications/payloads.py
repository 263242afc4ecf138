"""The wire form of a notification, shared by socket messages and REST responses.

One function, so a client sees the same object whether it arrived live or over REST.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from notifications.models import Notification


def iso_utc(value: datetime) -> str:
    """A datetime as ISO 8601 in UTC with a ``Z`` (what JavaScript's ``Date`` parses everywhere)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def notification_payload(notification: Notification) -> dict[str, Any]:
    """The design's Notification: the payload of a ``notification`` message and a REST item."""
    return {
        "id": str(notification.id),
        "user_id": str(notification.user_id),
        "type": notification.type,
        "title": notification.title,
        "message": notification.message,
        "read": notification.read_at is not None,
        "created_at": iso_utc(notification.created_at),
        "action": notification.action,
        "archived": notification.archived_at is not None,
    }
