"""``manage.py realtime_prune``: drop what crashed processes left in Redis (safe to run from cron).

Normally nothing needs it: a process's registry entries expire REGISTRY_TTL_S after it stops
refreshing them, and history and channel positions expire by their TTLs. What can linger:
the hash and ``procs`` member of a process that died (expired, but deleted only when someone
reads the registry), and expired connection ids in the per-user sets of users who stay
connected elsewhere (each set's TTL is renewed by the live connection, so its dead members
stay until this runs). Idempotent; prints what it removed.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from realtime.storage import redis as rt_redis
from realtime.storage import registry


class Command(BaseCommand):
    """Prune stale registry entries of dead processes and expired per-user connection ids."""

    help = "Remove stale realtime registry data (dead processes, expired connection ids) from Redis."

    def handle(self, *args, **options) -> None:
        """Prune and report."""
        processes = registry.prune_stale()
        client = rt_redis.sync_client()
        now = time.time()
        users = removed = 0
        pattern = registry.user_key("*")
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                users, removed = self._prune_users(batch, now, users, removed)
                batch = []
        if batch:
            users, removed = self._prune_users(batch, now, users, removed)
        self.stdout.write(
            f"pruned registry entries of {processes} dead process(es); "
            f"removed {removed} expired connection id(s) from {users} user set(s)"
        )

    @staticmethod
    def _prune_users(keys: list[bytes], now: float, users: int, removed: int) -> tuple[int, int]:
        pipe = rt_redis.sync_client().pipeline(transaction=False)
        for key in keys:
            pipe.zremrangebyscore(key, "-inf", now)
        for count in pipe.execute():
            if count:
                users += 1
                removed += count
        return users, removed
