"""Every way a socket session ends runs the same cleanup (in-process, real Redis and database):
a handler failing, Redis failing under a command, an exception outside the handlers, the
consumer's task cancelled. Afterwards the hub, the registry, the control routing and the
connection gauge hold nothing of the socket."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.core.commands import register_command
from realtime.core.session import Session
from realtime.fanout.node import get_node
from realtime.ops import metrics
from realtime.storage import registry
from tests.conftest import access_token_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _close_thread_connections(close_thread_connections):
    """Async tests here touch the database from asgiref's thread (PostgreSQL: closed after each)."""


def _gauge() -> float:
    return metrics.CONNECTIONS._value.get()


async def _nothing_left_of(user, connection_id: str) -> None:
    node = await get_node()
    hub = node.hub
    for _ in range(100):  # the cleanup runs after the close: give it a few turns
        if connection_id not in hub.connections and node.control.users.get(str(user.pk)) is None:
            break
        await asyncio.sleep(0.02)
    assert connection_id not in hub.connections
    assert not any(conn.connection_id == connection_id for subs in hub.channels.values() for conn in subs)
    assert node.control.users.get(str(user.pk)) is None
    assert await sync_to_async(registry.user_connection_count)(str(user.pk)) == 0


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_failing_command_answers_internal_and_the_session_goes_on(connect, user, restore_registries):
    def explode(user, args):
        raise RuntimeError("a bug in a handler")

    register_command("test.explode", explode)
    _, sock, _ = await connect(user)
    connection_id = sock.welcome["payload"]["connection_id"]

    errors = _Records()
    logging.getLogger("realtime.core.session").addHandler(errors)
    try:
        await sock.send({"type": "command", "id": "c1", "payload": {"name": "test.explode", "args": {}}})
        reply = await sock.recv_until(lambda f: f.get("reply_to") == "c1")
    finally:
        logging.getLogger("realtime.core.session").removeHandler(errors)
    await sock.send({"type": "ping", "id": "p"})
    pong = await sock.recv_until(lambda f: f.get("reply_to") == "p")

    assert reply == {"type": "error", "reply_to": "c1",
                     "payload": {"code": "internal", "message": "internal error; see the server log"}}
    assert pong == {"type": "pong", "reply_to": "p"}
    assert len(errors.records) == 1 and connection_id in errors.records[0].getMessage()
    assert str(errors.records[0].exc_info[1]) == "a bug in a handler"


async def test_redis_failing_under_a_command_answers_unavailable(connect, user, restore_registries):
    def redis_down(user, args):
        raise RedisConnectionError("Connection refused")

    register_command("test.redis_down", redis_down)
    _, sock, _ = await connect(user)

    await sock.send({"type": "command", "id": 9, "payload": {"name": "test.redis_down", "args": {}}})
    reply = await sock.recv_until(lambda f: f.get("reply_to") == 9)

    assert reply == {"type": "error", "reply_to": 9, "payload": {
        "code": "unavailable", "message": "the service is temporarily unavailable; retry later"}}


async def test_an_exception_outside_the_handlers_closes_1011_and_cleans_up(connect, user, monkeypatch):
    _, sock, _ = await connect(user)
    connection_id = sock.welcome["payload"]["connection_id"]
    gauge = _gauge()

    async def broken(self, raw):
        raise RuntimeError("a bug outside the handlers")

    monkeypatch.setattr(Session, "receive", broken)
    await sock.send({"type": "ping"})
    closed = await sock.communicator.receive_output(3)

    assert closed == {"type": "websocket.close", "code": 1011, "reason": "internal error"}
    await _nothing_left_of(user, connection_id)
    assert _gauge() == gauge - 1


async def test_a_cancelled_session_task_cleans_up(user):
    from renum.asgi import application

    communicator = WebsocketCommunicator(application, "/ws/",
                                         subprotocols=["renum.v1", f"bearer.{access_token_for(user)}"])
    assert (await communicator.connect(5))[0]
    welcome = orjson.loads(await communicator.receive_from(3))
    connection_id = welcome["payload"]["connection_id"]
    gauge = _gauge()

    communicator.future.cancel()  # what a server shutting down does to the session's task
    with pytest.raises(asyncio.CancelledError):
        await communicator.future

    await _nothing_left_of(user, connection_id)
    assert _gauge() == gauge - 1


async def test_a_failed_close_still_cleans_up(connect, user):
    """The admin's disconnect reaches a socket whose transport is gone: the session ends anyway."""
    _, sock, _ = await connect(user)
    connection_id = sock.welcome["payload"]["connection_id"]

    await sock.communicator.send_input({"type": "websocket.disconnect", "code": 1006})
    await sock.communicator.wait(3)

    await _nothing_left_of(user, connection_id)
