"""The notification table: one row per notification per recipient."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class NotificationType(models.TextChoices):
    """Severity of a notification, as the front end renders it."""

    INFO = "info", "Info"
    SUCCESS = "success", "Success"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class Notification(models.Model):
    """A message to one user; ``read_at`` set means read (Novu/Knock style timestamps, not flags)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No separate index: (user, -created_at, id) below serves every lookup by user.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications", db_index=False
    )
    type = models.CharField(max_length=16, choices=NotificationType.choices, default=NotificationType.INFO)
    title = models.CharField(max_length=200)
    message = models.TextField(blank=True)
    # {"type": str, "payload": any}: what the front end does on click; validated in the service.
    action = models.JSONField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    # Set: archived, hidden from the inbox unless asked for (``?archived=true``), not counted as unread.
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        # Same order as the listing index below, so a list is one index scan.
        ordering = ["-created_at", "id"]
        indexes = [
            # The unread count scans only this user's unread rows: the index holds no read (or
            # archived) ones, so its size follows the unread backlog, not the table
            # (django-notifications-hq #164).
            models.Index(
                fields=["user", "created_at"],
                condition=Q(read_at__isnull=True, archived_at__isnull=True),
                name="notif_user_unread_idx",
            ),
            # Cursor pagination of a user's list: (user, created_at desc, id) is one index range scan.
            models.Index(fields=["user", "-created_at", "id"], name="notif_user_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.title} -> {self.user_id}"

    @property
    def read(self) -> bool:
        """Whether the user has read it (derived from ``read_at``)."""
        return self.read_at is not None

    @property
    def archived(self) -> bool:
        """Whether the user archived it (derived from ``archived_at``)."""
        return self.archived_at is not None


class IdempotentRequest(models.Model):
    """The first answer to a ``POST /api/notifications/`` with an ``Idempotency-Key``.

    Inserted in the same transaction as the notifications it answers for, before them: a
    concurrent retry waits on the unique key and then reads this answer, and a rolled-back
    request leaves neither. Rows older than ``IDEMPOTENCY_TTL_S`` are ignored and pruned.
    """

    # Who asked: ``service:<key fingerprint>`` or ``user:<id>``; keys are scoped per caller.
    caller = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    # SHA-256 of the request body: the same key with another body is refused (422).
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)
    response = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["caller", "key"], name="notif_idempotency_caller_key")]

    def __str__(self) -> str:
        return f"{self.caller} {self.key}"
