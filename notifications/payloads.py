"""The wire form of a notification, shared by socket messages and REST responses.

One function, so a client sees the same object whether it arrived live or over REST.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

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


def new_notification_payloads_json(
    *, ids: list[str], user_ids: list[Any], type: str, title: str, message: str, action: Any, created_at: datetime,
) -> list[bytes]:
    """``notification_payload`` of new (unread, unarchived) notifications, as JSON bytes.

    Notifications sent to many users at once differ only in ``id`` and ``user_id``: the rest is
    serialized once, and every payload is those bytes with its two ids spliced in (the same
    bytes as serializing ``notification_payload``, without a row or a dict per recipient).
    """
    common = orjson.dumps({"type": type, "title": title, "message": message, "read": False,
                           "created_at": iso_utc(created_at), "action": action, "archived": False},
                          option=orjson.OPT_NON_STR_KEYS)
    rest = b"," + common[1:]
    return [b'{"id":"' + id_.encode() + b'","user_id":' + orjson.dumps(str(user_id)) + rest
            for id_, user_id in zip(ids, user_ids, strict=True)]
