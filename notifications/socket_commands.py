"""Socket commands of notifications: the inbox's actions over the socket.

``notification.mark_read {id}`` and ``notification.mark_all_read {before?}`` as in v1, and the
bulk actions on selected ids, each ``{ids: [uuid, ...]}`` (1..1000) answered with
``{"changed": [ids that changed], "count": unread}``: ``notification.mark_read_many``,
``notification.mark_unread``, ``notification.archive``, ``notification.unarchive``,
``notification.delete``. They call the same services as the REST API, with the connection's
authenticated user, so a change made over the socket publishes exactly the events a REST call
would, and every other tab of the user converges.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.utils.dateparse import parse_datetime

from notifications.events import notification_payload
from notifications.models import Notification
from notifications.selectors import notification_unread_count
from notifications.services import (
    notification_archive_many,
    notification_delete_many,
    notification_mark_all_read,
    notification_mark_read,
    notification_mark_read_many,
    notification_mark_unread_many,
    notification_unarchive_many,
)
from realtime.core.commands import CommandError, register_command


def _only_keys(args: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(args) - allowed
    if unknown:
        raise CommandError("invalid_message", f"unknown arguments: {', '.join(sorted(unknown))}")


def _uuid_arg(args: dict[str, Any], name: str) -> uuid.UUID:
    value = args.get(name)
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise CommandError("invalid_message", f"{name} must be a notification UUID")


def _datetime_arg(args: dict[str, Any], name: str) -> datetime | None:
    value = args.get(name)
    if value is None:
        return None
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None:
        raise CommandError("invalid_message", f"{name} must be an ISO 8601 datetime")
    # A client that omits the offset means UTC, the only zone the protocol speaks.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def notification_mark_read_command(user: Any, args: dict[str, Any]) -> dict[str, Any]:
    """``notification.mark_read {id}`` -> ``{"notification": ..., "count": unread}``."""
    _only_keys(args, {"id"})
    notification_id = _uuid_arg(args, "id")
    try:
        notification = notification_mark_read(user=user, notification_id=notification_id)
    except Notification.DoesNotExist:
        raise CommandError("not_found", "no such notification") from None
    return {"notification": notification_payload(notification), "count": notification_unread_count(user=user)}


def notification_mark_all_read_command(user: Any, args: dict[str, Any]) -> dict[str, Any]:
    """``notification.mark_all_read {}`` or ``{before}`` -> ``{"updated": n, "count": unread}``."""
    _only_keys(args, {"before"})
    updated = notification_mark_all_read(user=user, before=_datetime_arg(args, "before"))
    return {"updated": updated, "count": notification_unread_count(user=user)}


MAX_IDS = 1000


def _ids_arg(args: dict[str, Any]) -> list[uuid.UUID]:
    value = args.get("ids")
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_IDS:
        raise CommandError("invalid_message", f"ids must be a list of 1 to {MAX_IDS} notification UUIDs")
    return [_uuid_arg({"id": item}, "id") for item in value]


def _bulk_command(service: Callable[..., list[str]]) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    """A ``{ids}`` command applying ``service`` to the user's own notifications among ``ids``."""

    def command(user: Any, args: dict[str, Any]) -> dict[str, Any]:
        _only_keys(args, {"ids"})
        changed = service(notification_ids=_ids_arg(args), user=user)
        return {"changed": changed, "count": notification_unread_count(user=user)}

    command.__doc__ = f"``{{ids}}`` -> ``{{changed, count}}`` through ``{service.__name__}``."
    return command


BULK_COMMANDS = {
    "notification.mark_read_many": notification_mark_read_many,
    "notification.mark_unread": notification_mark_unread_many,
    "notification.archive": notification_archive_many,
    "notification.unarchive": notification_unarchive_many,
    "notification.delete": notification_delete_many,
}


def register_notification_commands() -> None:
    """Register the commands with the realtime transport (called from ``AppConfig.ready``)."""
    register_command("notification.mark_read", notification_mark_read_command)
    register_command("notification.mark_all_read", notification_mark_all_read_command)
    for name, service in BULK_COMMANDS.items():
        register_command(name, _bulk_command(service))
