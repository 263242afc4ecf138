"""The ``notification`` payloads of a notification sent to many users, from one template.

The fast path of ``notifications.events.notification_payload`` (where the Notification is
defined): the same bytes, without a row or a dict per recipient.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from realtime.schemas import wire_time


def new_notification_payloads_json(
    *, ids: list[str], user_ids: list[Any], type: str, title: str, message: str, action: Any, created_at: datetime,
) -> list[bytes]:
    """``notification_payload`` of new (unread, unarchived) notifications, as JSON bytes.

    Notifications sent to many users at once differ only in ``id`` and ``user_id``: the rest is
    serialized once, and every payload is those bytes with its two ids spliced in (the same
    bytes as serializing ``notification_payload``, without a row or a dict per recipient).
    """
    common = orjson.dumps({"type": type, "title": title, "message": message, "read": False,
                           "created_at": wire_time(created_at), "action": action, "archived": False},
                          option=orjson.OPT_NON_STR_KEYS)
    rest = b"," + common[1:]
    return [b'{"id":"' + id_.encode() + b'","user_id":' + orjson.dumps(str(user_id)) + rest
            for id_, user_id in zip(ids, user_ids, strict=True)]
