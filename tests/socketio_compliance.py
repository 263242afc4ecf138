"""A compliance configuration of the Socket.IO binding's engine and parser, for the public suites.

Serve it and point the Engine.IO v4 or Socket.IO v5 test suite of socketio/socket.io
(``docs/engine.io-protocol/v4-test-suite``, ``docs/socket.io-protocol/v5-test-suite``) at it
(they expect port 3000)::

    SIO_COMPLIANCE=engineio uvicorn tests.socketio_compliance:app --port 3000
    SIO_COMPLIANCE=socketio uvicorn tests.socketio_compliance:app --port 3000

``engineio``: a bare Engine.IO endpoint at ``/engine.io/`` that echoes every message.
``socketio``: Socket.IO at ``/socket.io/`` with anonymous connects on ``/`` and ``/custom``; each
connect is answered by an ``auth`` event carrying the CONNECT payload, ``message`` by
``message-back`` with the same arguments, ``message-with-ack`` by an ack of its arguments.
Both: ping interval 300 ms, ping timeout 200 ms, maxPayload 1,000,000. No Django is involved:
this is the protocol layers alone (realtime/transports/socketio/engine.py, server.py, parser.py).
"""

from __future__ import annotations

import os
from typing import Any

from realtime.transports.socketio import parser
from realtime.transports.socketio.engine import Engine, EngineSocket
from realtime.transports.socketio.server import Connection

PING_INTERVAL_S = 0.3
PING_TIMEOUT_S = 0.2
MAX_PAYLOAD = 1_000_000
# Long enough for the heartbeat cases (three pings before any CONNECT), short enough for the
# case that waits for a session without CONNECT to be closed (within two seconds).
CONNECT_TIMEOUT_S = 1.5


class Echo:
    """Engine.IO mode: every message straight back."""

    def __init__(self, socket: EngineSocket) -> None:
        self.socket = socket

    async def on_message(self, data: str | bytes) -> None:
        await self.socket.send(data)

    async def on_close(self, reason: str) -> None:
        pass


class EchoNamespace:
    """Socket.IO mode: the behaviour the v5 suite expects of a namespace."""

    def __init__(self, connection: Connection, namespace: str) -> None:
        self.conn = connection
        self.namespace = namespace

    async def connect(self, auth: Any) -> None:
        await self.conn.connected(self.namespace)
        await self.conn.send(parser.Packet(parser.EVENT, self.namespace, ["auth", auth if auth is not None else {}]))

    async def event(self, args: list, ack_id: int | None) -> None:
        if args[0] == "message":
            await self.conn.send(parser.Packet(parser.EVENT, self.namespace, ["message-back", *args[1:]]))
        elif args[0] == "message-with-ack" and ack_id is not None:
            await self.conn.send(parser.Packet(parser.ACK, self.namespace, args[1:], id=ack_id))

    async def disconnect(self, reason: str) -> None:
        pass


def make_app(mode: str) -> Any:
    """The ASGI app of one mode."""
    if mode == "engineio":
        path, make_handler = "/engine.io/", Echo
    else:
        path = "/socket.io/"
        spaces = {"/": EchoNamespace, "/custom": EchoNamespace}

        def make_handler(socket: EngineSocket) -> Connection:
            return Connection(socket, spaces, connect_timeout=CONNECT_TIMEOUT_S)

    engine = Engine(make_handler, ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S,
                    max_payload=MAX_PAYLOAD, cors=_any_origin)

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope.get("path") == path:
            return await engine(scope, receive, send)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            await receive()
            await send({"type": "websocket.close", "code": 1008})

    return app


def _any_origin(scope: dict) -> list[tuple[bytes, bytes]]:
    origin = next((value for name, value in scope.get("headers", ()) if name == b"origin"), None)
    return [(b"access-control-allow-origin", origin)] if origin else []


app = make_app(os.environ.get("SIO_COMPLIANCE", "socketio"))
