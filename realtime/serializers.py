"""REST fields that write what the wire writes, so a REST answer and a socket message agree."""

from __future__ import annotations

from datetime import datetime

from rest_framework import serializers

from realtime.schemas import wire_time


class WireDateTimeField(serializers.DateTimeField):
    """A datetime as every timestamp of the protocol (``wire_time``: UTC, milliseconds, ``Z``);
    input is any ISO 8601 datetime, as ``DateTimeField`` reads it."""

    def to_representation(self, value: datetime | None) -> str | None:
        """The datetime as ``wire_time`` writes it (None stays None)."""
        return None if value is None else wire_time(value)
