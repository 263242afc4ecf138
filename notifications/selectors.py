"""Reads of notifications: every query the APIs, admin and commands make goes through here."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from typing import Any

from django.db import connections, router
from django.db.models import Count, Max, Q, QuerySet

from notifications.models import Notification
from notifications.utils import chunked

# Keeps `user_id IN (...)` below SQLite's bound-parameter limit and PostgreSQL plans simple.
_IDS_PER_QUERY = 1000


def notification_list(*, user: Any, unread: bool | None = None) -> QuerySet[Notification]:
    """A user's notifications, newest first; ``unread`` true/false filters, None gives all."""
    queryset = Notification.objects.filter(user=user)
    if unread is True:
        queryset = queryset.filter(read_at__isnull=True)
    elif unread is False:
        queryset = queryset.filter(read_at__isnull=False)
    return queryset.order_by("-created_at", "id")


def notification_get(*, user: Any, notification_id: uuid.UUID | str) -> Notification:
    """One of the user's notifications; another user's id raises ``Notification.DoesNotExist``.

    Foreign and missing ids fail the same way so that the API cannot leak which ids exist.
    """
    return Notification.objects.get(pk=notification_id, user=user)


def notification_unread_count(*, user: Any) -> int:
    """How many of the user's notifications are unread (answered from the partial index)."""
    return Notification.objects.filter(user=user, read_at__isnull=True).count()


def notification_unread_counts(*, user_ids: Iterable[Any]) -> dict[Any, int]:
    """Unread counts of many users with one grouped query per thousand users.

    Users without unread notifications are absent from the result: callers default to 0.
    """
    # Plain SQL: this runs after every notification write, and compiling the ORM's grouped
    # query costs several times what PostgreSQL takes to answer it from the partial index.
    connection = connections[router.db_for_read(Notification)]
    quote = connection.ops.quote_name
    table = quote(Notification._meta.db_table)
    user_column = quote(Notification._meta.get_field("user").column)
    read_column = quote(Notification._meta.get_field("read_at").column)
    to_python = Notification._meta.get_field("user").target_field.to_python  # ids as the ORM gives them
    counts: dict[Any, int] = {}
    with connection.cursor() as cursor:
        for chunk in chunked(user_ids, _IDS_PER_QUERY):
            cursor.execute(
                f"SELECT {user_column}, COUNT(*) FROM {table} WHERE {read_column} IS NULL"
                f" AND {user_column} IN ({', '.join(['%s'] * len(chunk))}) GROUP BY {user_column}",
                list(chunk),
            )
            counts.update((to_python(user_id), count) for user_id, count in cursor.fetchall())
    return counts


def notification_list_version(*, user: Any) -> str:
    """A short fingerprint of the user's notifications that changes with every service write.

    Services only insert, mark read/unread and delete, so total and unread counts and the
    newest ``created_at`` and ``read_at`` together change on every one of those writes.
    """
    state = Notification.objects.filter(user=user).aggregate(
        total=Count("pk"),
        unread=Count("pk", filter=Q(read_at__isnull=True)),
        last_created=Max("created_at"),
        last_read=Max("read_at"),
    )
    raw = f"{user.pk}|{state['total']}|{state['unread']}|{state['last_created']}|{state['last_read']}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]
