"""A session-cookie socket ends when its session does: at the session's own expiry, at logout,
at a password change, and when the session disappears by any other way (in-process, real
Redis and database)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.contrib.sessions.models import Session
from django.test import Client

from realtime.schemas import wire_time

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _close_thread_connections(close_thread_connections):
    """Async tests here touch the database from asgiref's thread (PostgreSQL: closed after each)."""


def _login(user) -> tuple[Client, str]:
    client = Client()
    client.force_login(user)
    return client, client.cookies[django_settings.SESSION_COOKIE_NAME].value


async def _session_socket(connect, session_key: str):
    connected, sock, _ = await connect(headers=[(b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session_key}"
                                                 .encode())])
    assert connected and sock.welcome["type"] == "welcome"
    return sock


async def _closed(sock, timeout: float = 5) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        output = await sock.communicator.receive_output(max(0.01, deadline - asyncio.get_running_loop().time()))
        if output["type"] == "websocket.close":
            return output


async def test_welcome_announces_the_sessions_own_expiry(connect, user):
    _, key = await sync_to_async(_login)(user)
    ends = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=7)
    await sync_to_async(Session.objects.filter(session_key=key).update)(expire_date=ends)

    sock = await _session_socket(connect, key)

    # Not now + SESSION_COOKIE_AGE (two weeks): the session ends in 7 minutes.
    assert sock.welcome["payload"]["expires_at"] == wire_time(ends)


async def test_logout_closes_that_sessions_sockets_only(connect, make_user):
    user = await sync_to_async(make_user)(is_staff=True)  # to log out through the admin's view
    client, key = await sync_to_async(_login)(user)
    _, other_key = await sync_to_async(_login)(user)
    leaving = await _session_socket(connect, key)
    other_session = await _session_socket(connect, other_key)
    _, token_socket, _ = await connect(user)

    response = await sync_to_async(client.post)("/admin/logout/")

    assert response.status_code == 200
    assert await _closed(leaving) == {"type": "websocket.close", "code": 4001, "reason": "logged out"}
    for sock in (other_session, token_socket):
        await sock.send({"type": "ping", "id": "p"})
        assert await sock.recv_until(lambda f: f.get("reply_to") == "p") == {"type": "pong", "reply_to": "p"}


async def test_a_password_change_closes_every_session_socket_of_the_user(connect, user):
    _, key = await sync_to_async(_login)(user)
    sock = await _session_socket(connect, key)
    _, token_socket, _ = await connect(user)

    def change_password() -> None:
        user.set_password("another-secret-456")
        user.save()

    await sync_to_async(change_password)()

    assert await _closed(sock) == {"type": "websocket.close", "code": 4001, "reason": "password changed"}
    await token_socket.send({"type": "ping", "id": "p"})
    assert await token_socket.recv_until(lambda f: f.get("reply_to") == "p") == {"type": "pong", "reply_to": "p"}


async def test_a_session_that_disappears_any_other_way_closes_its_sockets(connect, user, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "USER_RECHECK_S": 1}
    _, key = await sync_to_async(_login)(user)
    sock = await _session_socket(connect, key)

    await sync_to_async(Session.objects.filter(session_key=key).delete)()  # no signal: e.g. an operator's SQL

    assert await _closed(sock, timeout=8) == {"type": "websocket.close", "code": 4001, "reason": "session ended"}


async def test_a_session_socket_closes_when_the_session_expires(connect, user, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "HEARTBEAT_S": 2}
    _, key = await sync_to_async(_login)(user)
    ends = datetime.now(UTC) + timedelta(seconds=2)
    await sync_to_async(Session.objects.filter(session_key=key).update)(expire_date=ends)
    sock = await _session_socket(connect, key)

    assert await _closed(sock, timeout=8) == {"type": "websocket.close", "code": 4011, "reason": "session expired"}
