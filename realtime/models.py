"""The realtime app's tables: the transactional outbox, and the admin's realtime permissions.

``OutboxEvent``: a service's ``*_on_commit`` publish inserts one row here inside the caller's
transaction; after commit the process's relay delivers the row to Redis (offsets and epochs
are assigned there, as for any publish) and deletes it. A rolled-back transaction leaves no
row, and a committed one leaves a row that stays until Redis has it: a Redis outage delays
events, it cannot drop them. See ``realtime/relay.py``.

``RealtimeAccess`` has no table: it only holds the permissions of the admin's realtime
actions, so that they can be granted to users and groups in the admin like any other
(``realtime.view_monitor``, ``realtime.disconnect``, ``realtime.broadcast``).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class OutboxEvent(models.Model):
    """One or more prepared realtime messages of one transaction, waiting for Redis.

    ``records`` holds the messages already validated and serialized (orjson): for a publish
    a list of ``[channel, envelope head, envelope tail, audience, coalesce key]``, for a
    control message ``{"user_id": ..., "message": {...}}``; above 16 KB zlib-compressed
    (``realtime.relay.COMPRESS_ABOVE_BYTES``). ``token`` makes each message's
    idempotency key (``<token>:<index>``), which the publish script checks so that a delivery
    retried after a timeout is not appended twice. ``claimed_by``/``lease_until`` say which
    process delivers the row; a row whose lease ran out (its process died) is taken over.
    """

    class Kind(models.TextChoices):
        PUBLISH = "p", "publish"
        CONTROL = "c", "control"

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=1, choices=Kind.choices, default=Kind.PUBLISH)
    records = models.BinaryField()
    token = models.CharField(max_length=32)
    created_at = models.DateTimeField(default=timezone.now)
    claimed_by = models.CharField(max_length=100, blank=True, default="")
    lease_until = models.DateTimeField(db_index=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "outbox event"
        default_permissions = ()

    def __str__(self) -> str:
        return f"outbox event {self.pk} ({self.get_kind_display()})"


class RealtimeAccess(models.Model):
    """No table: a holder for the realtime permissions (``managed = False``, never queried)."""

    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = "realtime access"
        permissions = [
            ("view_monitor", "Can view the realtime monitor (live sockets, security events)"),
            ("disconnect", "Can disconnect realtime sockets"),
            ("broadcast", "Can broadcast system events to every connected user"),
        ]
