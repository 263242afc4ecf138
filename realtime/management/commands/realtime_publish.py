"""``manage.py realtime_publish <channel> <type> '<json payload>'``: publish from a shell or cron."""

from __future__ import annotations

import orjson
from django.core.management.base import BaseCommand, CommandError

from realtime.publish import publish_rollback_unsafe


class Command(BaseCommand):
    """Publish one message to a channel and print its position."""

    help = "Publish a message to a realtime channel, e.g. realtime_publish broadcast system_event '{\"text\": \"hi\"}'"

    def add_arguments(self, parser) -> None:  # noqa: ANN001 - argparse parser
        """Declare the command's arguments."""
        parser.add_argument("channel")
        parser.add_argument("type")
        parser.add_argument("payload", help="JSON payload")
        parser.add_argument("--sender", default="operator")
        parser.add_argument("--exclude", default="", help="comma-separated user ids not to deliver to")

    def handle(self, *args, channel: str, type: str, payload: str, sender: str, exclude: str, **options) -> None:
        """Validate, publish, report."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"payload is not valid JSON: {exc}") from None
        try:
            published = publish_rollback_unsafe(
                channel, type, data, sender=sender, exclude_users=[u for u in exclude.split(",") if u]
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if published is None:
            raise CommandError("Redis is unavailable; nothing was published (see the log)")
        self.stdout.write(f"published to {published.channel}: offset {published.offset}, epoch {published.epoch}")
