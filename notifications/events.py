"""The events of the notifications app: their payload structs, the payload of a row, the messages
and how they are published (after commit, then the unread counts, in one pipeline).

Everything a client receives about its notifications on ``user:<id>`` is defined here, once:
``notification`` (a Notification, also the REST item: ``NotificationOutputSerializer`` and the
TypeScript ``Notification`` are checked against ``NotificationPayload`` by the tests),
``notification_read``, ``unread_count`` and the id events (``notification_unread``,
``notification_archived``, ``notification_unarchived``, ``notification_deleted``). The structs
are registered with the transport (``EVENT_TYPES``, from ``AppConfig.ready``),
which checks every publication of these types against them. Timestamps: ``wire_time``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any, Literal

import msgspec
from django.db import router

from notifications.models import Notification
from notifications.selectors import notification_unread_counts, notification_unread_counts_sql, unread_counts_of_rows
from realtime.core.channels import user_channel
from realtime.publish import AfterCommitQuery, JsonMessages, Message, publish_many_on_commit
from realtime.schemas import wire_time

NOTIFICATION = "notification"
NOTIFICATION_READ = "notification_read"
UNREAD_COUNT = "unread_count"
NOTIFICATION_UNREAD = "notification_unread"
NOTIFICATION_ARCHIVED = "notification_archived"
NOTIFICATION_UNARCHIVED = "notification_unarchived"
NOTIFICATION_DELETED = "notification_deleted"


class NotificationAction(msgspec.Struct, forbid_unknown_fields=True):
    """What the front end does when a notification is clicked."""

    type: str
    payload: Any = None


class NotificationPayload(msgspec.Struct):
    """Payload of a ``notification`` message and an item of the REST API (the design's Notification)."""

    id: str
    user_id: str
    type: Literal["info", "success", "warning", "error"]
    title: str
    message: str
    read: bool
    created_at: str
    action: NotificationAction | None = None
    archived: bool = False


class NotificationReadPayload(msgspec.Struct):
    """Payload of a ``notification_read`` message: which notifications became read (``all`` with
    ``before``: every one created up to that time)."""

    ids: list[str]
    all: bool
    before: str | None = None


class UnreadCountPayload(msgspec.Struct):
    """Payload of an ``unread_count`` message (and the REST unread count)."""

    count: int


class NotificationIdsPayload(msgspec.Struct, forbid_unknown_fields=True):
    """Payload of ``notification_unread``, ``notification_archived``, ``notification_unarchived``
    and ``notification_deleted``: which of the user's notifications changed that way."""

    ids: list[str]


# The app's message types and their payloads, registered with the transport from ``AppConfig.ready``.
EVENT_TYPES: dict[str, type[msgspec.Struct]] = {
    NOTIFICATION: NotificationPayload,
    NOTIFICATION_READ: NotificationReadPayload,
    UNREAD_COUNT: UnreadCountPayload,
    NOTIFICATION_UNREAD: NotificationIdsPayload,
    NOTIFICATION_ARCHIVED: NotificationIdsPayload,
    NOTIFICATION_UNARCHIVED: NotificationIdsPayload,
    NOTIFICATION_DELETED: NotificationIdsPayload,
}


def notification_payload(notification: Notification) -> dict[str, Any]:
    """The ``NotificationPayload`` of a row, as a dict: a ``notification`` message and a REST item."""
    return {
        "id": str(notification.id),
        "user_id": str(notification.user_id),
        "type": notification.type,
        "title": notification.title,
        "message": notification.message,
        "read": notification.read_at is not None,
        "created_at": wire_time(notification.created_at),
        "action": notification.action,
        "archived": notification.archived_at is not None,
    }


def notification_message(notification: Notification) -> Message:
    """The ``notification`` message of a new notification, for its user's channel."""
    return Message(user_channel(notification.user_id), NOTIFICATION, notification_payload(notification))


def unread_count_message(user_id: Any, count: int) -> Message:
    """The ``unread_count`` message of a user."""
    return Message(user_channel(user_id), UNREAD_COUNT, {"count": count})


def ids_message(user_id: Any, event: str, ids: list[str]) -> Message:
    """``notification_read`` (of these ids, v1's ``{ids, all: false}``) or one of the id events."""
    # notification_read keeps its v1 shape ({ids, all}); the newer events carry only the ids.
    payload = {"ids": ids, "all": False} if event == NOTIFICATION_READ else {"ids": ids}
    return Message(user_channel(user_id), event, payload)


def all_read_message(user_id: Any, *, before: Any) -> Message:
    """``notification_read`` of every notification of the user created up to ``before``."""
    return Message(user_channel(user_id), NOTIFICATION_READ, {"ids": [], "all": True, "before": wire_time(before)})


def unread_counts_after_commit(user_ids: Collection[Any]) -> Callable[[], JsonMessages]:
    """What sends each user their unread count after commit (one grouped query).

    Counted after commit, so concurrent writers never publish a count that their own
    transaction could not see yet. The payloads are serialized as ``UnreadCount`` would be
    (``{"count": n}``), without a struct each: a fan-out counts for every recipient. A single
    user's count is an ``AfterCommitQuery``, which a write that commits in one statement runs
    in the round trip of its COMMIT (``notification_create``).
    """
    user_ids = list(dict.fromkeys(user_ids))

    def messages_of(counts: dict[Any, int]) -> JsonMessages:
        return JsonMessages(UNREAD_COUNT, [user_channel(user_id) for user_id in user_ids],
                            [b'{"count":%d}' % counts.get(user_id, 0) for user_id in user_ids])

    if len(user_ids) == 1:
        sql, params = notification_unread_counts_sql(user_ids=user_ids)
        return AfterCommitQuery(router.db_for_read(Notification), sql, params,
                                lambda rows: messages_of(unread_counts_of_rows(rows)))
    return lambda: messages_of(notification_unread_counts(user_ids=user_ids))


def notification_events_publish_on_commit(messages: Iterable[Message], *, unread_counts_of: Collection[Any]) -> None:
    """After commit: ``messages``, then the unread counts of ``unread_counts_of``, in one pipeline."""
    publish_many_on_commit(messages, then=unread_counts_after_commit(unread_counts_of) if unread_counts_of else None)
