"""The Engine.IO server as an ASGI application, driven message by message."""

from __future__ import annotations

import asyncio

from realtime.transports.socketio.engine import Engine
from realtime.transports.wsprotocol import KEEPALIVE, TEXTS


class Quiet:
    async def on_message(self, data):
        pass

    async def on_close(self, reason):
        pass


async def session(extensions: dict) -> tuple[Engine, list[dict]]:
    """A WebSocket session that connects and leaves; the engine and what it sent."""
    engine = Engine(lambda socket: Quiet(), ping_interval=25, ping_timeout=20, max_payload=1000)
    incoming = asyncio.Queue()
    for message in ({"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}):
        incoming.put_nowait(message)
    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "websocket", "path": "/socket.io/", "query_string": b"EIO=4&transport=websocket",
             "headers": [], "extensions": extensions}
    await engine(scope, incoming.get, send)
    return engine, sent


async def test_a_websocket_session_is_accepted_without_websocket_pings_beside_its_own():
    engine, sent = await session({})

    assert sent[0] == {"type": "websocket.accept", KEEPALIVE: False}
    assert sent[1]["text"].startswith('0{"sid":')  # the OPEN packet, then Engine.IO's own pings
    assert not engine.sockets  # the disconnect ended the session


async def test_with_the_texts_extension_the_open_packet_goes_with_the_accept():
    engine, sent = await session({TEXTS: {}})

    assert sent[0]["type"] == "websocket.accept" and sent[0][KEEPALIVE] is False
    [opening] = sent[0][TEXTS]
    assert opening.startswith('0{"sid":') and '"upgrades":[]' in opening
    assert sent[1:] == [{"type": "websocket.close", "code": 1000}]  # after the client left
    assert not engine.sockets
