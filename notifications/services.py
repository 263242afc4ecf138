"""Writes of notifications: the only code that changes the table, and the only code that publishes.

Every write is atomic and its realtime events are sent after commit through
``realtime.publish`` (never the channel layer): a rolled-back write sends nothing, and a
write that changed nothing (marking a read notification read) sends nothing either.
Unread counts are counted *after* commit, so concurrent writers never publish a count that
their own transaction could not see yet.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, router, transaction
from django.db.models import Q
from django.utils import timezone

from notifications.conf import setting as notifications_setting
from notifications.events import all_read_message, ids_message, notification_message
from notifications.events import notification_events_publish_on_commit as _publish_on_commit
from notifications.events import unread_counts_after_commit as _unread_counts
from notifications.models import IdempotentRequest, Notification, NotificationType
from notifications.payloads import new_notification_payloads_json
from notifications.utils import chunked
from realtime.core.channels import user_channel
from realtime.publish import (
    create_and_publish_on_commit,
    publish_json_many_on_commit,
)
from realtime.schemas import new_uuids, within_wire_precision
from realtime.storage import randomness

# Rows per INSERT of notification_create_many: big enough to amortize round trips, small
# enough to stay under SQLite's parameter limit (10 columns x 1000 rows).
CREATE_BATCH_SIZE = 1000
# Recipient ids checked per query on PostgreSQL (one array parameter): a 100,000-user fan-out
# in five round trips rather than a hundred.
_IDS_PER_LOOKUP = 20_000
# Largest message, and largest action once serialized: a notification is a pointer to
# something, not the thing; every byte is stored per recipient and sent to every tab.
MAX_MESSAGE_CHARS = 10_000
MAX_ACTION_BYTES = 8 * 1024


def notification_action_validate(action: Any) -> dict[str, Any] | None:
    """Return the action as ``{"type": str, "payload": any}`` or raise ``ValidationError``.

    The front end dispatches on ``type``; any other key would be silently ignored there, so
    it is refused here instead.
    """
    if action is None:
        return None
    if not isinstance(action, dict):
        raise ValidationError({"action": "must be an object {type, payload} or null"})
    unknown = set(action) - {"type", "payload"}
    if unknown:
        raise ValidationError({"action": f"unknown keys: {', '.join(sorted(map(str, unknown)))}"})
    if not isinstance(action.get("type"), str) or not action["type"]:
        raise ValidationError({"action": "type must be a non-empty string"})
    try:
        size = len(orjson.dumps(action))
    except TypeError:
        raise ValidationError({"action": "must be JSON (objects, arrays, strings, numbers, booleans, null)"}) from None
    if size > MAX_ACTION_BYTES:
        raise ValidationError({"action": f"must be at most {MAX_ACTION_BYTES} bytes as JSON"})
    return {"type": action["type"], "payload": action.get("payload")}


def _content_validate(*, type: str, title: str, message: str) -> None:
    errors = {}
    if type not in NotificationType.values:
        errors["type"] = f"must be one of {', '.join(NotificationType.values)}"
    if not isinstance(title, str) or not title.strip():
        errors["title"] = "must not be empty"
    elif len(title) > 200:
        errors["title"] = "must be at most 200 characters"
    if not isinstance(message, str):
        errors["message"] = "must be a string"
    elif len(message) > MAX_MESSAGE_CHARS:
        errors["message"] = f"must be at most {MAX_MESSAGE_CHARS} characters"
    if errors:
        raise ValidationError(errors)


def notification_create(
    *, user: Any, type: str, title: str, message: str, action: dict[str, Any] | None = None
) -> Notification:
    """Store a notification for one user and deliver it live after commit.

    The row and its outbox event are written in one transaction (the caller's, or their own):
    the event is delivered exactly when the notification exists.
    """
    _content_validate(type=type, title=title, message=message)
    action = notification_action_validate(action)
    # The id from the process's random buffer, as uuid4 would make it (one system call less).
    notification = Notification(id=uuid.UUID(bytes=randomness.random_bytes(16), version=4), user=user, type=type,
                                title=title, message=message, action=action)
    create_and_publish_on_commit(
        notification, [notification_message(notification)],
        then=_unread_counts([user.pk]),
    )
    return notification


def _recipient_ids(*, users: Iterable[Any] | None, everyone: bool) -> list[Any]:
    """Primary keys of the recipients that exist (active users only for ``everyone``)."""
    user_model = get_user_model()
    if everyone:
        if users is not None:
            raise ValidationError({"users": "give users or everyone=True, not both"})
        return list(user_model.objects.filter(is_active=True).order_by("pk").values_list("pk", flat=True))
    if users is None:
        raise ValidationError({"users": "give users or everyone=True"})
    wanted = list(dict.fromkeys(getattr(u, "pk", u) for u in users))
    # Unknown ids are dropped here: on PostgreSQL the foreign key is checked only at commit,
    # which would fail the whole batch after every event had been queued.
    existing: list[Any] = []
    connection = connections[router.db_for_read(user_model)]
    if connection.vendor == "postgresql":
        # The ORM's query, with the ids as one array parameter: no query compiled per chunk.
        quote, pk = connection.ops.quote_name, user_model._meta.pk
        sql = (f"SELECT {quote(pk.column)} FROM {quote(user_model._meta.db_table)}"
               f" WHERE {quote(pk.column)} = ANY(%s) ORDER BY 1")
        with connection.cursor() as cursor:
            for chunk in chunked(wanted, _IDS_PER_LOOKUP):
                cursor.execute(sql, [[pk.get_prep_value(value) for value in chunk]])
                existing.extend(value for (value,) in cursor.fetchall())
        return existing
    for chunk in chunked(wanted, CREATE_BATCH_SIZE):
        existing.extend(user_model.objects.filter(pk__in=chunk).order_by("pk").values_list("pk", flat=True))
    return existing


def notification_create_many(
    *,
    users: Iterable[Any] | None = None,
    everyone: bool = False,
    type: str,
    title: str,
    message: str,
    action: dict[str, Any] | None = None,
) -> int:
    """Send the same notification to many users (objects or ids) or to every active user.

    Rows are inserted in batches (``_insert_new``) and their messages serialized from one
    template; after commit each recipient gets their ``notification`` and one ``unread_count``.
    Returns how many notifications were created.
    """
    _content_validate(type=type, title=title, message=message)
    action = notification_action_validate(action)
    recipient_ids = _recipient_ids(users=users, everyone=everyone)
    created_at = timezone.now()
    channels: list[str] = []
    payloads: list[bytes] = []
    with transaction.atomic():
        for chunk in chunked(recipient_ids, CREATE_BATCH_SIZE):
            ids = new_uuids(len(chunk))
            _insert_new(ids=ids, user_ids=chunk, type=type, title=title, message=message, action=action,
                        created_at=created_at)
            channels.extend(user_channel(user_id) for user_id in chunk)
            payloads.extend(new_notification_payloads_json(ids=ids, user_ids=chunk, type=type, title=title,
                                                           message=message, action=action, created_at=created_at))
        # One outbox write for the whole fan-out, delivered by one after-commit step together with
        # the unread counts: the publish then sends each recipient's notification and count
        # together (``relay.publish_pipelined`` groups a channel's messages).
        publish_json_many_on_commit("notification", channels, payloads, batch_size=CREATE_BATCH_SIZE,
                                    then=_unread_counts(recipient_ids) if recipient_ids else None)
    return len(recipient_ids)


def _insert_new(*, ids: list[str], user_ids: list[Any], type: str, title: str, message: str,
                action: dict[str, Any] | None, created_at: datetime) -> None:
    """Insert unread notifications that differ only in id and recipient.

    On PostgreSQL one ``INSERT ... SELECT FROM unnest(ids, user_ids)``: two array parameters
    instead of a model instance and nine prepared values per row; elsewhere ``bulk_create``.
    """
    connection = connections[router.db_for_write(Notification)]
    if connection.vendor != "postgresql":
        Notification.objects.bulk_create([
            Notification(id=id_, user_id=user_id, type=type, title=title, message=message, action=action,
                         created_at=created_at)
            for id_, user_id in zip(ids, user_ids, strict=True)
        ])
        return
    with connection.cursor() as cursor:
        action_json = None if action is None else orjson.dumps(action).decode()
        cursor.execute(_insert_new_sql(), [type, title, message, action_json, created_at, ids, user_ids])


@functools.cache
def _insert_new_sql() -> str:
    """The statement of ``_insert_new`` on PostgreSQL (built once)."""
    connection = connections[router.db_for_write(Notification)]
    quote = connection.ops.quote_name
    field = Notification._meta.get_field
    columns = ", ".join(quote(field(name).column) for name in
                        ("id", "user", "type", "title", "message", "action", "read_at", "archived_at", "created_at"))
    return (f"INSERT INTO {quote(Notification._meta.db_table)} ({columns}) "
            f"SELECT new.id, new.user_id, %s, %s, %s, %s::jsonb, NULL, NULL, %s "
            f"FROM unnest(%s::uuid[], %s::{field('user').target_field.rel_db_type(connection)}[]) AS new(id, user_id)")


def notification_mark_read(*, user: Any, notification_id: uuid.UUID | str) -> Notification:
    """Mark one of the user's notifications read; marking it again changes and sends nothing.

    Another user's id raises ``Notification.DoesNotExist``, like a missing one.
    """
    with transaction.atomic():
        # A conditional UPDATE, not read-then-save: two racing calls cannot both see "unread",
        # so exactly one of them publishes.
        changed = Notification.objects.filter(pk=notification_id, user=user, read_at__isnull=True).update(
            read_at=timezone.now()
        )
        notification = Notification.objects.get(pk=notification_id, user=user)
        if changed:
            _publish_on_commit(
                [ids_message(user.pk, "notification_read", [str(notification.id)])],
                unread_counts_of=[user.pk],
            )
    return notification


def notification_mark_all_read(*, user: Any, before: datetime | None = None, batch_size: int = 5000) -> int:
    """Mark the user's unread notifications created at or before ``before`` (default: now) read.

    The cutoff is GitHub's ``last_read_at``: what arrives while this runs stays unread.
    Each batch of ids is its own short transaction so that 100k rows never hold one long
    lock; ``notification_read`` (with ``all: true``) and ``unread_count`` are sent once, after
    the last batch commits. Returns how many notifications changed.
    """
    read_at = timezone.now()
    # Compared at the wire's precision: a ``before`` echoed from a ``created_at`` includes that
    # notification, and the ``before`` published below covers exactly the rows marked here.
    cutoff = within_wire_precision(before or read_at)
    unread = Notification.objects.filter(user=user, read_at__isnull=True, created_at__lte=cutoff)
    updated = 0
    while True:
        with transaction.atomic():
            # UPDATE ... WHERE id IN (SELECT id ... LIMIT n): one statement per batch, served by
            # the partial unread index, without shipping the ids to Python and back.
            batch_ids = unread.order_by("created_at").values("pk")[:batch_size]
            changed = Notification.objects.filter(pk__in=batch_ids, read_at__isnull=True).update(read_at=read_at)
        updated += changed
        if changed < batch_size:
            break
    if updated:
        _publish_on_commit(
            [all_read_message(user.pk, before=cutoff)],
            unread_counts_of=[user.pk],
        )
    return updated


def notification_delete(*, user: Any, notification_id: uuid.UUID | str) -> None:
    """Delete one of the user's notifications; another user's id raises ``Notification.DoesNotExist``.

    Every tab of the user hears ``notification_deleted`` and the new unread count.
    """
    if not notification_delete_many(notification_ids=[notification_id], user=user):
        raise Notification.DoesNotExist(f"no notification {notification_id} for this user")


# ------------------------------------------------------------------ changes of many (inbox, admin)
#
# Each takes notification ids and, for a user's own inbox, ``user`` (other users' ids are then
# ignored, like missing ones); without ``user`` (the admin) they act on anyone's. Each returns
# the ids that changed, and after commit every affected user hears one event naming their
# changed ids (``notification_read``, ``notification_unread``, ``notification_archived``,
# ``notification_unarchived``, ``notification_deleted``) and their new unread count, so every
# open tab converges. Ids that were already in the wanted state change and send nothing.


def notification_mark_read_many(*, notification_ids: Iterable[Any], user: Any = None) -> list[str]:
    """Mark notifications read."""
    return _apply_many(notification_ids=notification_ids, user=user, pending=Q(read_at__isnull=True),
                       update={"read_at": timezone.now()}, event="notification_read")


def notification_mark_unread_many(*, notification_ids: Iterable[Any], user: Any = None) -> list[str]:
    """Mark notifications unread again."""
    return _apply_many(notification_ids=notification_ids, user=user, pending=Q(read_at__isnull=False),
                       update={"read_at": None}, event="notification_unread")


def notification_archive_many(*, notification_ids: Iterable[Any], user: Any = None) -> list[str]:
    """Archive notifications: out of the inbox and its unread count, listed with ``?archived=true``."""
    return _apply_many(notification_ids=notification_ids, user=user, pending=Q(archived_at__isnull=True),
                       update={"archived_at": timezone.now()}, event="notification_archived")


def notification_unarchive_many(*, notification_ids: Iterable[Any], user: Any = None) -> list[str]:
    """Bring archived notifications back to the inbox."""
    return _apply_many(notification_ids=notification_ids, user=user, pending=Q(archived_at__isnull=False),
                       update={"archived_at": None}, event="notification_unarchived")


def notification_delete_many(*, notification_ids: Iterable[Any], user: Any = None) -> list[str]:
    """Delete notifications."""
    return _apply_many(notification_ids=notification_ids, user=user, pending=Q(), update=None,
                       event="notification_deleted")


def _apply_many(
    *, notification_ids: Iterable[Any], user: Any, pending: Q, update: dict[str, Any] | None, event: str
) -> list[str]:
    changed_by_user: dict[Any, list[str]] = {}
    with transaction.atomic():
        for chunk in chunked(notification_ids, CREATE_BATCH_SIZE):
            rows = Notification.objects.select_for_update().filter(pending, pk__in=chunk)
            if user is not None:
                rows = rows.filter(user=user)
            # Locked so that the rows reported as changed are exactly the rows changed here.
            found = list(rows.order_by().values_list("pk", "user_id"))
            if not found:
                continue
            targets = Notification.objects.filter(pk__in=[pk for pk, _ in found])
            if update is None:
                targets.delete()
            else:
                targets.update(**update)
            for pk, user_id in found:
                changed_by_user.setdefault(user_id, []).append(str(pk))
        events = [ids_message(user_id, event, changed_ids) for user_id, changed_ids in changed_by_user.items()]
        _publish_on_commit(events, unread_counts_of=changed_by_user)
    return [pk for changed_ids in changed_by_user.values() for pk in changed_ids]


# ------------------------------------------------------------------ idempotent requests (service API)


class IdempotencyKeyReused(Exception):
    """The same ``Idempotency-Key`` came with a different request body."""


@dataclass(frozen=True, slots=True)
class IdempotentAnswer:
    """What a request answered, and whether this is a replay of the first answer."""

    status_code: int
    body: dict[str, Any]
    replayed: bool


def idempotent_request(
    *, caller: str, key: str | None, body: bytes, perform: Callable[[], tuple[int, dict[str, Any]]]
) -> IdempotentAnswer:
    """Run ``perform`` once per ``(caller, key)``: a retry answers exactly what the first call answered.

    Without a key, ``perform`` just runs. With one, its row is inserted *first*, in the same
    transaction as whatever ``perform`` writes: a concurrent retry waits on the unique key
    until the first commits and then reads its answer, and a failure (an exception from
    ``perform``, e.g. a ``ValidationError``) rolls back both, so nothing is stored and a retry
    runs again. The same key with another body raises ``IdempotencyKeyReused``. Keys live
    ``IDEMPOTENCY_TTL_S`` seconds.
    """
    if key is None:
        status_code, answer = perform()
        return IdempotentAnswer(status_code, answer, replayed=False)
    request_hash = hashlib.sha256(body).hexdigest()
    expired_before = timezone.now() - timedelta(seconds=notifications_setting("IDEMPOTENCY_TTL_S"))
    with transaction.atomic():
        IdempotentRequest.objects.filter(caller=caller, created_at__lt=expired_before).delete()
        try:
            with transaction.atomic():  # a savepoint: the duplicate must not break the outer transaction
                record = IdempotentRequest.objects.create(caller=caller, key=key, request_hash=request_hash)
        except IntegrityError:
            record = None
        if record is None:
            first = IdempotentRequest.objects.get(caller=caller, key=key)
            if first.request_hash != request_hash:
                raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
            return IdempotentAnswer(first.status_code, first.response, replayed=True)
        status_code, answer = perform()
        record.status_code, record.response = status_code, answer
        record.save(update_fields=["status_code", "response"])
    return IdempotentAnswer(status_code, answer, replayed=False)
