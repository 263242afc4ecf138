"""No frame and no failure can leave a ghost session (a socket gone from the network but still
counted in the hub and the registry): every way a session ends runs the same cleanup.

Against a real server process with 3 sockets per user, so that a leak locks the user out quickly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from realtime.storage import registry
from tests.conftest import access_token_for
from tests.live import LiveServer

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

MAX_CONNECTIONS_PER_USER = 3
# The frame of the report: orjson reads 300 levels of nesting, but cannot write them back.
DEEP_ID_PING = '{"type":"ping","id":' + "[" * 300 + "]" * 300 + "}"


@pytest.fixture(scope="module")
def server(django_db_setup):
    with LiveServer(REALTIME_MAX_CONNECTIONS_PER_USER=str(MAX_CONNECTIONS_PER_USER)) as live:
        yield live


@pytest.fixture(autouse=True)
def _close_thread_connections(close_thread_connections):
    """Every test here runs async code that touches the database."""


async def new_user() -> Any:
    return await sync_to_async(get_user_model().objects.create_user)(
        username=f"g-{uuid.uuid4().hex[:10]}", password="pw-secret-123")


async def welcome(server: LiveServer, user: Any):
    ws = await websockets.connect(server.ws_url, subprotocols=["renum.v1", f"bearer.{access_token_for(user)}"],
                                  proxy=None, open_timeout=10)
    frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert frame["type"] == "welcome", frame
    return ws


async def next_reply(ws, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame that is not a channel message (broadcast traffic may interleave)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if "offset" not in frame:
            return frame


async def registry_count_drops_to(user: Any, expected: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = await sync_to_async(registry.user_connection_count)(str(user.pk))
        if count == expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.05)


async def test_a_deeply_nested_id_is_refused_and_leaves_no_ghost(server):
    user = await new_user()
    replies = []
    for _ in range(MAX_CONNECTIONS_PER_USER + 2):  # more sockets than the user may hold at once
        ws = await welcome(server, user)
        await ws.send(DEEP_ID_PING)
        replies.append(await next_reply(ws))
        await ws.send('{"type":"ping","id":"still there?"}')
        replies.append(await next_reply(ws))
        await ws.close()

    assert replies == [
        {"type": "error", "payload": {"code": "invalid_message",
                                      "message": "id must be a string of at most 128 characters or an integer"}},
        {"type": "pong", "reply_to": "still there?"},
    ] * (MAX_CONNECTIONS_PER_USER + 2)
    assert await registry_count_drops_to(user, 0) == 0
    fresh = await welcome(server, user)  # not locked out
    await fresh.close()


@pytest.mark.parametrize("message_id", [
    "x" * 129, 2**70, -(2**70), 1.5, True, [], {}, ["a"], {"a": 1},
])
async def test_only_short_scalar_ids_are_echoed(server, message_id):
    user = await new_user()
    ws = await welcome(server, user)
    await ws.send(orjson.dumps({"type": "ping", "id": message_id}).decode() if not isinstance(message_id, int)
                  or isinstance(message_id, bool) or abs(message_id) < 2**63
                  else '{"type":"ping","id":' + str(message_id) + "}")
    reply = await next_reply(ws)
    assert reply["type"] == "error" and "reply_to" not in reply
    assert reply["payload"]["code"] in ("invalid_message", "invalid_json")
    await ws.send(orjson.dumps({"type": "ping", "id": "x" * 128}).decode())
    assert await next_reply(ws) == {"type": "pong", "reply_to": "x" * 128}
    await ws.send(orjson.dumps({"type": "ping", "id": -(2**63)}).decode())
    assert await next_reply(ws) == {"type": "pong", "reply_to": -(2**63)}
    await ws.close()
