"""Reads of notifications: every query the APIs, admin and commands make goes through here."""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from django.db import connections, router
from django.db.models import Count, Max, Q, QuerySet

from notifications.models import Notification
from notifications.utils import chunked
from realtime.schemas import within_wire_precision

# Keeps `user_id IN (...)` below SQLite's bound-parameter limit and PostgreSQL plans simple.
_IDS_PER_QUERY = 1000
# Ids per array parameter on PostgreSQL (one statement stays small enough to log and cancel).
_IDS_PER_ARRAY = 10_000


def notification_list(
    *,
    user: Any,
    unread: bool | None = None,
    archived: bool = False,
    types: Collection[str] = (),
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Notification]:
    """A user's notifications, newest first.

    ``archived`` False (the inbox) hides archived ones, True gives only them (the archive);
    ``unread`` true/false filters on the read state, None gives both; ``types`` keeps only
    those types; ``created_after`` / ``created_before`` bound ``created_at`` (both inclusive, the
    upper one at the wire's precision: ``created_before`` echoed from a ``created_at`` keeps that row).
    """
    queryset = Notification.objects.filter(user=user, archived_at__isnull=not archived)
    if unread is True:
        queryset = queryset.filter(read_at__isnull=True)
    elif unread is False:
        queryset = queryset.filter(read_at__isnull=False)
    if types:
        queryset = queryset.filter(type__in=list(types))
    if created_after is not None:
        queryset = queryset.filter(created_at__gte=created_after)
    if created_before is not None:
        queryset = queryset.filter(created_at__lte=within_wire_precision(created_before))
    return queryset.order_by("-created_at", "id")


def notification_get(*, user: Any, notification_id: uuid.UUID | str) -> Notification:
    """One of the user's notifications; another user's id raises ``Notification.DoesNotExist``.

    Foreign and missing ids fail the same way so that the API cannot leak which ids exist.
    """
    return Notification.objects.get(pk=notification_id, user=user)


def active_user_ids(*, user_ids: Iterable[Any]) -> set[Any]:
    """Which of these user ids are active users (ids as the ORM gives them)."""
    from django.contrib.auth import get_user_model

    found: set[Any] = set()
    for chunk in chunked(user_ids, _IDS_PER_QUERY):
        found.update(get_user_model().objects.filter(pk__in=chunk, is_active=True).values_list("pk", flat=True))
    return found


def notification_unread_count(*, user: Any) -> int:
    """How many of the user's inbox notifications are unread (archived ones do not count; partial index)."""
    return Notification.objects.filter(user=user, read_at__isnull=True, archived_at__isnull=True).count()


def notification_unread_counts(*, user_ids: Iterable[Any]) -> dict[Any, int]:
    """Unread counts of many users with one grouped query per thousand users.

    Users without unread notifications are absent from the result: callers default to 0.
    """
    using = router.db_for_read(Notification)
    # PostgreSQL takes the ids as one array parameter (``= ANY(%s)``), many per query; other
    # databases as an IN list under their parameter limit.
    per_query = _IDS_PER_ARRAY if connections[using].vendor == "postgresql" else _IDS_PER_QUERY
    counts: dict[Any, int] = {}
    with connections[using].cursor() as cursor:
        for chunk in chunked(user_ids, per_query):
            cursor.execute(*notification_unread_counts_sql(user_ids=chunk))
            counts.update(unread_counts_of_rows(cursor.fetchall()))
    return counts


def notification_unread_counts_sql(*, user_ids: list[Any]) -> tuple[str, list[Any]]:
    """The grouped query of ``notification_unread_counts`` for these ids (at most one query's
    worth) on ``router.db_for_read(Notification)``: its statement and parameters, for a caller
    that runs it in a round trip of its own making (``realtime.publish.AfterCommitQuery``).
    Its rows are ``(user_id, count)``: ``unread_counts_of_rows`` reads them."""
    # Plain SQL: this runs after every notification write, and compiling the ORM's grouped
    # query costs several times what PostgreSQL takes to answer it from the partial index.
    connection = connections[router.db_for_read(Notification)]
    postgresql = connection.vendor == "postgresql"
    among = "= ANY(%s)" if postgresql else f"IN ({', '.join(['%s'] * len(user_ids))})"
    return _unread_counts_select(connection.alias) + among + " GROUP BY 1", [user_ids] if postgresql else user_ids


def unread_counts_of_rows(rows: Iterable[tuple[Any, int]]) -> dict[Any, int]:
    """``{user id: unread count}`` of the rows of ``notification_unread_counts_sql`` (ids as the ORM gives them)."""
    to_python = Notification._meta.get_field("user").target_field.to_python
    return {to_python(user_id): count for user_id, count in rows}


@functools.cache
def _unread_counts_select(using: str) -> str:
    """The unread-count query up to its ``user_id`` condition (built once per database)."""
    quote = connections[using].ops.quote_name
    field = Notification._meta.get_field
    user_column = quote(field("user").column)
    return (f"SELECT {user_column}, COUNT(*) FROM {quote(Notification._meta.db_table)}"
            f" WHERE {quote(field('read_at').column)} IS NULL AND {quote(field('archived_at').column)} IS NULL"
            f" AND {user_column} ")


def notification_list_version(*, user: Any) -> str:
    """A short fingerprint of the user's notifications that changes with every service write.

    Services only insert, mark read/unread, archive/unarchive and delete, so the total,
    unread and archived counts and the newest ``created_at``, ``read_at`` and ``archived_at``
    together change on every one of those writes.
    """
    state = Notification.objects.filter(user=user).aggregate(
        total=Count("pk"),
        unread=Count("pk", filter=Q(read_at__isnull=True)),
        archived=Count("pk", filter=Q(archived_at__isnull=False)),
        last_created=Max("created_at"),
        last_read=Max("read_at"),
        last_archived=Max("archived_at"),
    )
    raw = "|".join(str(part) for part in (user.pk, *state.values()))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]
