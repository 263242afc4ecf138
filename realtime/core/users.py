"""Connect-time user lookup: the active users of the sockets connecting at the same moment, in one query.

Every socket's token names a user who must still exist and be active. Sockets connecting at
the same moment share one query (``realtime.fanout.batching``). Plain SQL, with rows turned into
users as the ORM does (``from_db``): compiling the ORM's query costs more than the query
itself in small batches.

On PostgreSQL the query runs on the event loop, on a psycopg async connection the process
keeps for it (one per event loop, opened with the settings Django uses, in autocommit mode).
In a connect storm the hop to Django's database thread cost more than the query: a thread
wake-up per batch, and the thread and the event loop taking the GIL from each other. Other
databases (SQLite in development), and PostgreSQL with ``RENUM_REALTIME["USER_LOOKUP_ON_LOOP"]``
off, use Django's connection in the database thread: the plain path. ``_fetch`` is the one
place that chooses; both paths run the same SQL and give the same users
(tests/realtime/test_users.py), and the tests close the loop connections after each test
(``close_all``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connections, router

from realtime.conf import setting
from realtime.fanout.batching import PerLoop

try:
    import psycopg
except ImportError:  # psycopg2 or another backend: the database thread
    psycopg = None


async def active_user(user_id: str) -> Any:
    """The active user with this id (as a token spells it), or None; batched with concurrent calls."""
    return await _loader.submit(user_id)


async def active_users(user_ids: list[str]) -> list[Any]:
    """The active user of each id (None for unknown, inactive or malformed ids), in one query."""
    query = _Query(user_ids)
    return query.users(await _fetch(query)) if query.values else [None] * len(user_ids)


async def active_ids(user_ids: list[str]) -> set[str]:
    """Those of ``user_ids`` that name an active user, in one query that builds no users."""
    query = _Query(user_ids, only_pk=True)
    if not query.values:
        return set()
    pk_field = query.model._meta.pk
    found = {pk_field.to_python(pk) for (pk,) in await _fetch(query)}
    return {u for u, pk in query.wanted.items() if pk in found}


async def fetch_rows(db: str, sql: Callable[[Any], tuple[str, list[Any]]]) -> list[tuple]:
    """Rows of one short SELECT, run where the user lookup runs: on the event loop's own
    connection on PostgreSQL, else in Django's database thread. ``sql(connection)`` builds the
    statement and its parameters for the backend (quoting, placeholders); domain apps use this
    for checks that many concurrent requests make at once (team membership)."""
    return await _fetch(_Statement(db, sql))


class _Statement:
    """A caller's SELECT, shaped like ``_Query`` for ``_fetch``."""

    def __init__(self, db: str, sql: Callable[[Any], tuple[str, list[Any]]]) -> None:
        self.db = db
        self.sql = sql


async def _fetch(query: _Query | _Statement) -> list[tuple]:
    if (setting("USER_LOOKUP_ON_LOOP") and psycopg is not None
            and "postgresql" in connections.settings[query.db]["ENGINE"]):
        return await _fetch_on_loop(query)
    return await _fetch_in_thread(query)


class _Query:
    """The SELECT of the active users among some ids, and the users made of its rows."""

    def __init__(self, user_ids: list[str], *, only_pk: bool = False) -> None:
        self.model = model = get_user_model()
        self.db = router.db_for_read(model)
        self.user_ids = user_ids
        pk_field = model._meta.pk
        self.wanted: dict[str, Any] = {}
        for user_id in user_ids:
            try:
                self.wanted[user_id] = pk_field.to_python(user_id)
            except ValidationError:
                continue
        self.values = list(dict.fromkeys(self.wanted.values()))
        # Only what a socket session uses (permissions, the registry), not the whole row.
        # In the model's field order: ``from_db`` reads the values in that order.
        names = (pk_field.name,) if only_pk else (
            pk_field.name, model.USERNAME_FIELD, "is_active", "is_staff", "is_superuser")
        wanted_fields = {model._meta.get_field(name) for name in names}
        self.fields = [f for f in model._meta.concrete_fields if f in wanted_fields]

    def sql(self, connection: Any) -> tuple[str, list[Any]]:
        """The statement and its parameters, quoted and prepared for ``connection``'s backend."""
        quote = connection.ops.quote_name
        meta = self.model._meta
        statement = (
            f"SELECT {', '.join(quote(f.column) for f in self.fields)} FROM {quote(meta.db_table)}"
            f" WHERE {quote(meta.get_field('is_active').column)}"
            f" AND {quote(meta.pk.column)} IN ({', '.join(['%s'] * len(self.values))})"
        )
        return statement, [meta.pk.get_db_prep_value(v, connection) for v in self.values]

    def users(self, rows: list[tuple]) -> list[Any]:
        """One user (or None) per id asked for, in order."""
        attnames = [f.attname for f in self.fields]
        by_id = {}
        for row in rows:
            # to_python: what the backend's converters would do (SQLite gives booleans as 0/1).
            values = [f.to_python(v) for f, v in zip(self.fields, row, strict=True)]
            user = self.model.from_db(self.db, attnames, values)
            by_id[str(user.pk)] = user
        return [by_id.get(str(self.wanted[u])) if u in self.wanted else None for u in self.user_ids]


@database_sync_to_async
def _fetch_in_thread(query: _Query | _Statement) -> list[tuple]:
    connection = connections[query.db]
    statement, params = query.sql(connection)
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


class _LoopConnection:
    """A psycopg async connection of one event loop, opened on first use and after a failure."""

    def __init__(self, db: str) -> None:
        # Settings and SQL quoting only: this wrapper never opens a connection of its own.
        self.wrapper = connections.create_connection(db)
        self.connection: Any = None

    async def fetch(self, query: _Query | _Statement) -> list[tuple]:
        statement, params = query.sql(self.wrapper)
        for attempt in (1, 2):
            if self.connection is None or self.connection.closed:
                options = self.wrapper.get_connection_params()
                options.pop("cursor_factory", None)  # Django's is a sync cursor
                options.setdefault("connect_timeout", 5)  # an unanswering database fails connects
                self.connection = await psycopg.AsyncConnection.connect(autocommit=True, **options)
            try:
                cursor = await self.connection.execute(statement, params)
                return await cursor.fetchall()
            except psycopg.OperationalError:
                # The server restarted or dropped the connection: reconnect once, then give up.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection; usable from any thread or loop, as it sends nothing."""
        connection, self.connection = self.connection, None
        if connection is not None and not connection.closed:
            # What AsyncConnection.close() does for a connection outside a pool, without
            # needing the loop that opened it.
            connection.pgconn.finish()


# Per event loop (test suites and ``async_to_sync`` run several): {database alias: connection}.
_loop_connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _LoopConnection]] = (
    weakref.WeakKeyDictionary())


async def _fetch_on_loop(query: _Query | _Statement) -> list[tuple]:
    held = _loop_connections.setdefault(asyncio.get_running_loop(), {})
    connection = held.get(query.db)
    if connection is None:
        connection = held[query.db] = _LoopConnection(query.db)
    return await connection.fetch(query)


def close_all() -> None:
    """Close the lookup connections of every event loop (tests: before the next test, and before
    the test database is dropped; a finished loop's connection would linger until collected)."""
    held = [c for conns in list(_loop_connections.values()) for c in conns.values()]
    _loop_connections.clear()
    for connection in held:
        connection.close()


_loader: PerLoop[str, Any] = PerLoop(active_users)
