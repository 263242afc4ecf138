"""The realtime app's permissions. Nothing of the realtime layer lives in the database; this
model only holds the permissions of the admin's realtime actions, so that they can be granted
to users and groups in the admin like any other (``realtime.view_monitor``,
``realtime.disconnect``, ``realtime.broadcast``)."""

from __future__ import annotations

from django.db import models


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
