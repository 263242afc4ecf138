"""Measure ``notification_create_many`` to many users on the configured database and Redis.

Creates ``--users`` users (bulk, usernames ``bench-many-<run>-<i>``), then times the call that
notifies all of them, and the moment the last of their events is in Redis (the call returns
after the delivery attempt made right after the commit; what that attempt left to the outbox
relay is waited for). Deletes the users (and so their notifications) and the run's Redis keys
at the end. Prints markdown.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from notifications.services import notification_create_many


class Command(BaseCommand):
    """``manage.py bench_create_many [--users N] [--repeat N]``."""

    help = "Benchmark notification_create_many to many users (prints markdown)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Size and repetitions."""
        parser.add_argument("--users", type=int, default=100_000, help="recipients of one call")
        parser.add_argument("--repeat", type=int, default=3, help="calls to time (one user set)")

    def handle(self, *args: Any, **options: Any) -> None:
        """Create the users, time the calls, print, clean up."""
        count, repeat = options["users"], options["repeat"]
        prefix = f"bench-many-{uuid.uuid4().hex[:8]}-"
        user_model = get_user_model()
        for start in range(0, count, 10_000):
            user_model.objects.bulk_create(
                [user_model(username=f"{prefix}{i}", password="!") for i in range(start, min(count, start + 10_000))])
        ids = list(user_model.objects.filter(username__startswith=prefix).order_by("pk").values_list("pk", flat=True))
        calls: list[float] = []
        delivered: list[float] = []
        try:
            for _ in range(repeat):
                started = time.perf_counter()
                created = notification_create_many(users=ids, type="info", title="bench", message="many")
                calls.append(time.perf_counter() - started)
                _wait_for_relay()
                delivered.append(time.perf_counter() - started)
                assert created == count
        finally:
            for start in range(0, len(ids), 10_000):
                user_model.objects.filter(pk__in=ids[start:start + 10_000]).delete()
            _delete_channel_keys(ids)
        self.stdout.write(f"| notification_create_many to {count:,} users | call: median "
                          f"{statistics.median(calls):.2f} s "
                          f"({', '.join(f'{c:.2f}' for c in calls)}) | last event in Redis: median "
                          f"{statistics.median(delivered):.2f} s ({', '.join(f'{d:.2f}' for d in delivered)}) |")


def _delete_channel_keys(user_ids: list[Any]) -> None:
    """Drop the users' channels from Redis (position, history, idempotency keys): a 100,000-user
    run leaves some 300,000 keys otherwise."""
    from realtime.storage import redis as rt_redis
    from realtime.storage import streams

    client = rt_redis.sync_client()
    for start in range(0, len(user_ids), 10_000):
        pipe = client.pipeline(transaction=False)  # one key per command: on a Cluster they are in many slots
        for user_id in user_ids[start:start + 10_000]:
            channel = f"user:{user_id}"
            for key in (streams.meta_key(channel), streams.history_key(channel), streams.idempotency_key(channel)):
                pipe.unlink(key)
        pipe.execute()


def _wait_for_relay() -> None:
    try:
        from realtime.relay import relay
    except ImportError:  # a version without the outbox publishes within the call
        return
    relay().drain(120)
