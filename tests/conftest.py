"""Shared fixtures: users, tokens, a clean Redis namespace, and socket helpers."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.db import connections
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """The test process itself uses no PostgreSQL connection pool (server processes started by
    the tests keep theirs). Tests call the ORM through ``sync_to_async`` from a new thread per
    event loop, and nothing returns such a thread's connection to a pool, as the end of a
    request does in a server: a pool of 8 would be used up after 8 tests."""
    from django.conf import settings

    settings.DATABASES["default"].get("OPTIONS", {}).pop("pool", None)


@pytest.fixture(autouse=True)
def _clean_realtime_redis(settings):
    """Every test starts with no realtime keys in Redis (history, registry, tickets, layer)."""
    from realtime.conf import setting
    from realtime.storage import redis as rt_redis
    from realtime.storage import streams

    client = rt_redis.sync_client()
    # The data set's generation stays: it describes the Redis server, not a test's data. Deleted,
    # the next new connection would renew it (the server looks new to the data set) and give the
    # channels a test has just published to new epochs half-way through the test.
    keep = {streams.generation_key().encode(), streams.generation_run_key().encode()}
    for pattern in {f"{setting('KEY_PREFIX')}:*", "renum:*"}:
        for key in client.scan_iter(match=pattern, count=1000):
            if key not in keep:
                client.delete(key)
    yield


@pytest.fixture(autouse=True)
def _stop_outbox_relay():
    """Each test gets its own outbox relay thread (started on demand), stopped after it, so no
    relay of an earlier test touches the database of a later one."""
    yield
    from realtime import relay

    relay.reset()


@pytest.fixture(autouse=True)
def _close_user_lookup_connections():
    """Each test's event loop opens its own user-lookup connection on PostgreSQL; close it after."""
    yield
    from realtime.core import users

    users.close_all()


def read_history(channel: str, client: Any = None) -> list:
    """A channel's history stream as ``streams.Record`` objects, oldest first (``client``: another
    Redis than the project's, e.g. a test's own server)."""
    from realtime.storage import redis as rt_redis
    from realtime.storage import streams

    entries = (client or rt_redis.sync_client()).xrange(streams.history_key(channel))
    return [streams.Record.parse(fields[b"r"]) for _, fields in entries]


@pytest.fixture
def make_user(db):
    """Create a user: ``make_user(username=None, **fields)``."""

    def make(username: str | None = None, password: str = "pw-secret-123", **fields: Any):
        username = username or f"user{next(_counter)}"
        return get_user_model().objects.create_user(username=username, password=password, **fields)

    return make


@pytest.fixture
def user(make_user):
    """A plain active user."""
    return make_user()


def access_token_for(user) -> str:
    """A fresh simplejwt access token for a user."""
    return str(AccessToken.for_user(user))


@pytest.fixture
def api_client():
    """A DRF test client."""
    return APIClient()


@pytest.fixture
def auth_client(user):
    """A DRF test client authenticated with the ``user`` fixture's JWT."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}")
    return client


# ---------------------------------------------------------------- reliability report

def pytest_addoption(parser):
    """``--reliability-report PATH`` writes what the failure scenarios measured (docs/reliability.md)."""
    parser.addoption("--reliability-report", default=None, help="write the failure-test measurements here")


_reliability_rows: list[dict[str, Any]] = []


@pytest.fixture
def reliability():
    """``reliability(scenario=..., **measurements)`` records one row of docs/reliability.md."""
    return lambda **row: _reliability_rows.append(row)


def pytest_sessionfinish(session, exitstatus):
    """Render the recorded rows when asked to."""
    path = session.config.getoption("--reliability-report")
    if not path or not _reliability_rows:
        return
    from tests.reliability_report import render

    with open(path, "w") as out:
        out.write(render(_reliability_rows, exitstatus))


# ---------------------------------------------------------------- sockets and servers


class Socket:
    """A WebsocketCommunicator with JSON helpers and exact waits."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.welcome: dict[str, Any] | None = None

    async def send(self, message: Any) -> None:
        """Send a JSON command (or raw text when given a str)."""
        text = message if isinstance(message, str) else orjson.dumps(message).decode()
        await self.communicator.send_to(text_data=text)

    async def recv(self, timeout: float = 3) -> dict[str, Any]:
        """The next frame, parsed."""
        return orjson.loads(await self.communicator.receive_from(timeout))

    async def recv_until(self, predicate, timeout: float = 3) -> dict[str, Any]:
        """Skip frames until one matches."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - asyncio.get_running_loop().time()))
            if predicate(frame):
                return frame

    async def nothing(self, timeout: float = 0.3) -> bool:
        """True when no frame arrives within the timeout."""
        return await self.communicator.receive_nothing(timeout)

    async def close(self) -> None:
        """Disconnect (always, so the consumer task ends)."""
        await self.communicator.disconnect()


@pytest.fixture
async def connect():
    """``await connect(user, path=..., subprotocols=..., headers=...)`` -> (connected, Socket)."""
    sockets: list[Socket] = []

    async def open_socket(user=None, *, path: str = "/ws/", token: str | None = None,
                          subprotocols: list[str] | None = None, headers: list | None = None,
                          expect_welcome: bool = True):
        if subprotocols is None:
            subprotocols = ["renum.v1"]
            if user is not None or token is not None:
                subprotocols.append("bearer." + (token or access_token_for(user)))
        from renum.asgi import application

        communicator = WebsocketCommunicator(application, path, headers=headers or [], subprotocols=subprotocols)
        socket = Socket(communicator)
        sockets.append(socket)
        connected, detail = await communicator.connect(timeout=5)
        if connected and expect_welcome:
            socket.welcome = await socket.recv()
            assert socket.welcome["type"] == "welcome"
        return connected, socket, detail

    yield open_socket
    for socket in sockets:
        await socket.close()


@pytest.fixture
def restore_registries():
    """Let a test register channel namespaces and commands without leaking them to others."""
    from realtime.core import channels, commands

    saved = dict(channels._policies), dict(commands._commands)
    yield
    channels._policies.clear()
    channels._policies.update(saved[0])
    commands._commands.clear()
    commands._commands.update(saved[1])


@pytest.fixture
def live_server_factory(transactional_db):
    """``live_server_factory(**env)`` starts a uvicorn process; all are stopped after the test."""
    from tests.live import LiveServer

    servers: list[LiveServer] = []

    def start(port: int | None = None, **env: str) -> LiveServer:
        server = LiveServer(port, **env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def live_server_proc(live_server_factory):
    """One running server process."""
    return live_server_factory()


@pytest.fixture
async def close_thread_connections():
    """Close the database connections asgiref's worker thread opened during an async test.

    Nothing else closes them, and on PostgreSQL an open one blocks dropping the test database.
    """
    yield
    await sync_to_async(connections.close_all)()
