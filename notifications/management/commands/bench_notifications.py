"""Measure the two queries that get slow on big notification tables, on the configured database.

1. The unread count of one user (the badge every page load and poller asks for), with
   ``--rows`` notifications in the table, most of them other users' and most of them read.
2. Mark-all-read of ``--mark-all`` unread notifications of one user, in batches.

Data is inserted in bulk (``INSERT ... SELECT generate_series`` on PostgreSQL, ``bulk_create``
elsewhere) for users created by the benchmark, and deleted again at the end. Prints markdown.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection
from django.utils import timezone

from notifications.models import Notification
from notifications.selectors import notification_unread_count
from notifications.services import notification_mark_all_read

OTHER_USERS = 1000
# Share of the other users' notifications left unread: a realistic backlog in the partial index.
OTHER_UNREAD_EVERY = 10


class Command(BaseCommand):
    """``manage.py bench_notifications [--rows N] [--unread N] [--mark-all N] [--samples N]``."""

    help = "Benchmark the unread count and mark-all-read on the configured database (prints markdown)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Sizes of the data set and of the measurement."""
        parser.add_argument("--rows", type=int, default=1_000_000, help="notifications in the table in total")
        parser.add_argument("--unread", type=int, default=100, help="unread notifications of the counted user")
        parser.add_argument("--read", type=int, default=10_000, help="read notifications of the counted user")
        parser.add_argument("--mark-all", type=int, default=100_000, help="unread notifications to mark read at once")
        parser.add_argument("--batch-size", type=int, default=5000, help="batch size of mark-all-read")
        parser.add_argument("--samples", type=int, default=2000, help="unread count queries to time")

    def handle(self, *args: Any, **options: Any) -> None:
        """Create the data, measure, print, and always clean up."""
        rows, unread, read, mark_all = options["rows"], options["unread"], options["read"], options["mark_all"]
        others_rows = rows - unread - read - mark_all
        if others_rows < 0:
            raise SystemExit("--rows must be at least --unread + --read + --mark-all")
        prefix = f"bench-notif-{uuid.uuid4().hex[:8]}-"
        user_model = get_user_model()
        users = user_model.objects.bulk_create(
            [user_model(username=f"{prefix}{i}", password="!") for i in range(OTHER_USERS + 2)]
        )
        bench_users = user_model.objects.filter(username__startswith=prefix).order_by("pk")
        user_ids = list(bench_users.values_list("pk", flat=True))
        counted_id, reader_id, other_ids = user_ids[0], user_ids[1], user_ids[2:]
        try:
            started = time.perf_counter()
            self._insert([counted_id], unread, unread_every=1)
            self._insert([counted_id], read, unread_every=0)
            self._insert([reader_id], mark_all, unread_every=1)
            self._insert(other_ids, others_rows, unread_every=OTHER_UNREAD_EVERY)
            self._analyze()
            load_s = time.perf_counter() - started
            counted = user_model.objects.get(pk=counted_id)
            reader = user_model.objects.get(pk=reader_id)
            self._report(
                counted=counted,
                reader=reader,
                load_s=load_s,
                users=len(users),
                **options,
            )
        finally:
            self._cleanup(user_ids)

    # ------------------------------------------------------------------ data

    def _insert(self, user_ids: list[int], count: int, *, unread_every: int) -> None:
        """``count`` rows spread over ``user_ids``; every ``unread_every``-th unread (0: none, 1: all)."""
        if count <= 0:
            return
        now = timezone.now()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""
                    INSERT INTO {Notification._meta.db_table}
                        (id, user_id, type, title, message, action, read_at, created_at)
                    SELECT gen_random_uuid(), (%(users)s::int[])[1 + i %% %(n_users)s], 'info', 'bench', '', NULL,
                           CASE WHEN %(every)s > 0 AND i %% GREATEST(%(every)s, 1) = 0 THEN NULL ELSE %(now)s END,
                           %(now)s - i * interval '1 millisecond'
                    FROM generate_series(1, %(count)s) AS i
                    """,
                    {"users": user_ids, "n_users": len(user_ids), "every": unread_every, "now": now, "count": count},
                )
            return
        batch: list[Notification] = []
        for i in range(1, count + 1):
            is_unread = unread_every > 0 and i % unread_every == 0
            batch.append(
                Notification(
                    user_id=user_ids[i % len(user_ids)],
                    type="info",
                    title="bench",
                    message="",
                    read_at=None if is_unread else now,
                    created_at=now - timedelta(milliseconds=i),
                )
            )
            if len(batch) == 5000:
                Notification.objects.bulk_create(batch)
                batch = []
        Notification.objects.bulk_create(batch)

    def _analyze(self) -> None:
        # Fresh statistics, as autovacuum would have them on a table that grew slowly.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Notification._meta.db_table}")

    def _cleanup(self, user_ids: list[int]) -> None:
        # Raw DELETE: the ORM's cascade would first load every notification into Python.
        with connection.cursor() as cursor:
            for start in range(0, len(user_ids), 500):
                chunk = user_ids[start : start + 500]
                placeholders = ",".join(["%s"] * len(chunk))
                cursor.execute(f"DELETE FROM {Notification._meta.db_table} WHERE user_id IN ({placeholders})", chunk)
        get_user_model().objects.filter(pk__in=user_ids).delete()
        if connection.vendor == "postgresql":
            # Lets the next run reuse the dead rows' space instead of growing table and indexes.
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM ANALYZE {Notification._meta.db_table}")

    # ------------------------------------------------------------------ measurements

    def _report(self, *, counted: Any, reader: Any, load_s: float, users: int, **options: Any) -> None:
        total_rows = Notification.objects.count()
        unread_rows = Notification.objects.filter(read_at__isnull=True).count()
        count = notification_unread_count(user=counted)
        samples = options["samples"]
        timings = _time(lambda: notification_unread_count(user=counted), samples)
        plan = _count_plan(counted.pk)
        without_index = self._count_without_index(counted) if connection.vendor == "postgresql" else None

        statements: list[float] = []
        with _statement_timer(statements):
            started = time.perf_counter()
            updated = notification_mark_all_read(user=reader, batch_size=options["batch_size"])
            mark_all_s = time.perf_counter() - started
        unread_after = notification_unread_count(user=reader)

        out = self.stdout.write
        out(
            f"Database: {connection.vendor} {_server_version()}; {total_rows:,} notifications "
            f"({unread_rows:,} unread) of {users:,} users; loaded in {load_s:.1f} s.\n\n"
        )
        out("| measurement | result |")
        out("|---|---|")
        out(
            f"| unread count of one user ({count} unread, {options['read']:,} read), {samples} queries | "
            f"p50 {_ms(statistics.median(timings))}, p99 {_ms(_p99(timings))}, max {_ms(max(timings))} |"
        )
        if without_index is not None:
            out(
                f"| same count with index scans disabled (sequential scan), 20 queries | "
                f"p50 {_ms(statistics.median(without_index))} |"
            )
        out(
            f"| mark all read: {updated:,} notifications, batches of {options['batch_size']:,} | "
            f"{mark_all_s:.2f} s total, {len(statements)} UPDATE statements, longest {_ms(max(statements))}, "
            f"{updated / mark_all_s:,.0f} rows/s; unread afterwards: {unread_after} |"
        )
        out("\nPlan of the unread count:\n")
        out("```")
        out(plan)
        out("```")
        if connection.vendor == "postgresql":
            out("\n" + _index_sizes())

    def _count_without_index(self, counted: Any) -> list[float]:
        with connection.cursor() as cursor:
            cursor.execute("SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off")
        try:
            return _time(lambda: notification_unread_count(user=counted), 20)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET enable_indexscan; RESET enable_bitmapscan; RESET enable_indexonlyscan")


def _time(call: Callable[[], Any], samples: int) -> list[float]:
    call()  # warm the connection and the caches; a poller hits a warm server
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return timings


@contextmanager
def _statement_timer(durations: list[float]) -> Iterator[None]:
    """Record how long each UPDATE ran (each is one batch, i.e. how long it held its row locks)."""

    def wrapper(execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not sql.lstrip().upper().startswith("UPDATE"):
            return execute(sql, params, many, context)
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            durations.append(time.perf_counter() - started)

    with connection.execute_wrapper(wrapper):
        yield


def _count_plan(user_id: Any) -> str:
    """The plan of the count query the selector runs (executed, with timings, on PostgreSQL)."""
    sql = f"SELECT COUNT(*) FROM {Notification._meta.db_table} WHERE user_id = %s AND read_at IS NULL"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if connection.vendor == "postgresql" else "EXPLAIN QUERY PLAN "
    with connection.cursor() as cursor:
        cursor.execute(prefix + sql, [user_id])
        return "\n".join(" ".join(str(part) for part in row) for row in cursor.fetchall())


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def _server_version() -> str:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return cursor.fetchone()[0]
    if connection.vendor == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version
    return ""


def _index_sizes() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT indexrelid::regclass::text, pg_size_pretty(pg_relation_size(indexrelid))
            FROM pg_index WHERE indrelid = %s::regclass ORDER BY 1
            """,
            [Notification._meta.db_table],
        )
        rows = cursor.fetchall()
    lines = ["| index | size |", "|---|---|"] + [f"| {name} | {size} |" for name, size in rows]
    return "\n".join(lines)
