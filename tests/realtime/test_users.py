"""The connect-time user lookup: on PostgreSQL it runs on the event loop's own connection."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from realtime.core import users

pytestmark = pytest.mark.django_db(transaction=True)

on_postgresql = pytest.mark.skipif(connections["default"].vendor != "postgresql", reason="PostgreSQL only")


@on_postgresql
async def test_lookups_run_on_the_loop_connection_not_the_database_thread(make_user, monkeypatch):
    alice = await sync_to_async(make_user)(username="alice")

    async def no_thread(*args, **kwargs):
        raise AssertionError("the database thread was used")

    monkeypatch.setattr(users, "_fetch_in_thread", no_thread)
    found = await asyncio.gather(*(users.active_user(str(alice.pk)) for _ in range(3)))

    assert [u.username for u in found] == ["alice"] * 3
    held = users._loop_connections[asyncio.get_running_loop()]["default"]
    assert held.connection is not None and not held.connection.closed


@on_postgresql
async def test_a_dropped_lookup_connection_is_reopened(make_user):
    alice = await sync_to_async(make_user)(username="alice")
    assert (await users.active_users([str(alice.pk)]))[0].username == "alice"
    held = users._loop_connections[asyncio.get_running_loop()]["default"]
    first = held.connection
    backend_pid = first.info.backend_pid

    def terminate():
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend_pid])
            return cursor.fetchone()[0]

    assert await sync_to_async(terminate)() is True

    found = await users.active_users([str(alice.pk), "0"])

    assert [u.username if u else None for u in found] == ["alice", None]
    assert first.closed and held.connection is not first and held.connection.info.backend_pid != backend_pid


@on_postgresql
async def test_close_all_closes_every_loops_connection(make_user):
    alice = await sync_to_async(make_user)(username="alice")
    await users.active_users([str(alice.pk)])
    held = users._loop_connections[asyncio.get_running_loop()]["default"].connection

    users.close_all()

    assert held.closed and not users._loop_connections


async def test_deactivated_users_sockets_are_closed_by_the_periodic_check(connect, make_user, settings):
    from realtime.core.rechecks import close_deactivated
    from realtime.fanout.node import get_node

    stays = await sync_to_async(make_user)(username="stays")
    leaves = await sync_to_async(make_user)(username="leaves")
    _, kept, _ = await connect(stays)
    _, dropped, _ = await connect(leaves)
    await sync_to_async(type(leaves).objects.filter(pk=leaves.pk).update)(is_active=False)
    node = await get_node()
    node.stamps["users"] = 0.0  # due now

    await close_deactivated(node)

    closed = await dropped.communicator.receive_output(5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 4001)
    assert await kept.communicator.receive_nothing(0.2)


async def test_active_ids_are_those_of_existing_active_users(make_user):
    active = await sync_to_async(make_user)(username="here")
    inactive = await sync_to_async(make_user)(username="away", is_active=False)

    found = await users.active_ids([str(active.pk), str(inactive.pk), "999999", "not-a-number"])

    assert found == {str(active.pk)}
    assert await users.active_ids(["not-a-number"]) == set()


@on_postgresql
async def test_the_loop_connection_and_the_database_thread_find_the_same_users(make_user, settings, monkeypatch):
    alice = await sync_to_async(make_user)(username="alice", is_staff=True)
    away = await sync_to_async(make_user)(username="away", is_active=False)
    ids = [str(alice.pk), str(away.pk), "999999", "not-a-number", str(alice.pk)]
    threads = []
    in_thread = users._fetch_in_thread
    monkeypatch.setattr(users, "_fetch_in_thread", lambda query: threads.append(query) or in_thread(query))

    def seen(found: list) -> list:
        return [(u.pk, u.username, u.is_active, u.is_staff, u.is_superuser) if u else None for u in found]

    settings.RENUM_REALTIME = {"USER_LOOKUP_ON_LOOP": True}
    on_loop = (seen(await users.active_users(ids)), await users.active_ids(ids))
    assert threads == [] and asyncio.get_running_loop() in users._loop_connections
    settings.RENUM_REALTIME = {"USER_LOOKUP_ON_LOOP": False}
    in_the_thread = (seen(await users.active_users(ids)), await users.active_ids(ids))

    alice_row = (alice.pk, "alice", True, True, False)
    assert on_loop == in_the_thread == ([alice_row, None, None, None, alice_row], {str(alice.pk)})
    assert len(threads) == 2  # the plain path answered both lookups
