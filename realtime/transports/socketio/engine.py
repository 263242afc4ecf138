"""The Engine.IO 4 server: WebSocket and HTTP long-polling transports, the upgrade, heartbeats.

An ``Engine`` is an ASGI application for one path (``/socket.io/``). It opens sessions, keeps
each alive with ping packets (a session whose client does not answer within the ping timeout
is closed), and hands every ``message`` packet to the session's ``Handler``, which the
application creates per session (``realtime.transports.socketio.binding`` for Socket.IO). It holds no
protocol above Engine.IO.

A polling session lives in the memory of the process that opened it: behind several
processes, HTTP long-polling needs sticky sessions (see docs/deployment.md); a WebSocket-only
client needs none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import parse_qs

import orjson
from asgiref.sync import markcoroutinefunction

from realtime.transports.socketio import engineio
from realtime.transports.socketio.engineio import Packet
from realtime.transports.wsprotocol import KEEPALIVE, TEXTS

logger = logging.getLogger("realtime.transports.socketio")

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class Handler(Protocol):
    """What the application above Engine.IO does with one session."""

    async def on_message(self, data: str | bytes) -> None:
        """One ``message`` packet from the client."""

    async def on_close(self, reason: str) -> None:
        """The session ended (client close, transport error, ping timeout, server close)."""


class EngineSocket:
    """One Engine.IO session, on the polling transport or on a WebSocket."""

    __slots__ = ("engine", "sid", "scope", "transport", "handler", "closed", "ws_send", "upgrading", "buffer",
                 "buffered_bytes", "waiter", "drained", "posting", "pong", "heartbeat")

    def __init__(self, engine: Engine, sid: str, scope: dict, transport: str) -> None:
        self.engine = engine
        self.sid = sid
        self.scope = scope
        self.transport = transport
        self.handler: Handler | None = None
        self.closed = False
        self.ws_send: Send | None = None
        self.upgrading = False
        # Polling: packets waiting for the next GET, their size, and the GET waiting for them.
        self.buffer: list[Packet] = []
        self.buffered_bytes = 0
        self.waiter: asyncio.Future | None = None
        self.drained: asyncio.Event | None = None  # while a sender waits for the client to catch up
        self.posting = False
        self.pong = True
        self.heartbeat: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ sending

    def send(self, data: str | bytes) -> Awaitable[None]:
        """Send a ``message`` packet (await the result); on polling, waits while the client is
        behind by maxPayload.

        A plain function returning the server's own send coroutine on a WebSocket: the hot
        path of every delivery costs no coroutine of its own.
        """
        ws_send = self.ws_send
        if ws_send is not None and not self.upgrading and not self.closed and isinstance(data, str):
            return ws_send({"type": "websocket.send", "text": "4" + data})
        return self.send_packet(Packet(engineio.MESSAGE, data))

    def send_texts(self, texts: list[str]) -> Awaitable[None]:
        """Send several text ``message`` packets in order: on a WebSocket of a server with the
        ``TEXTS`` extension, as one write."""
        ws_send = self.ws_send
        if ws_send is not None and not self.upgrading and not self.closed and TEXTS in self.scope.get("extensions", ()):
            return ws_send({"type": "websocket.send", TEXTS: ["4" + text for text in texts]})
        return self._send_each(texts)

    async def _send_each(self, texts: list[str]) -> None:
        for text in texts:
            await self.send(text)

    async def send_packet(self, packet: Packet) -> None:
        if self.closed:
            raise ConnectionError("engine.io session closed")
        if self.ws_send is not None and not self.upgrading:
            await self.ws_send(_ws_frame(engineio.encode(packet)))
            return
        self.buffer.append(packet)
        self.buffered_bytes += len(packet.data) if packet.data is not None else 1
        self._wake()
        if self.buffered_bytes > self.engine.max_payload:
            if self.drained is None or self.drained.is_set():
                self.drained = asyncio.Event()
            await self.drained.wait()
            if self.closed:
                raise ConnectionError("engine.io session closed")

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def take_buffer(self) -> list[Packet]:
        packets, self.buffer, self.buffered_bytes = self.buffer, [], 0
        if self.drained is not None:
            self.drained.set()
        return packets

    # ------------------------------------------------------------------ receiving

    async def on_packet(self, packet: Packet) -> None:
        """Handle one packet from the client."""
        if packet.type == engineio.PONG:
            if not self.pong:
                self.pong = True
                if self.heartbeat is not None:
                    self.heartbeat.cancel()
                self._schedule_ping()
            touch = getattr(self.handler, "on_pong", None)
            if touch is not None:
                touch()
        elif packet.type == engineio.MESSAGE:
            if self.handler is not None:
                await self.handler.on_message(packet.data if packet.data is not None else "")
        elif packet.type == engineio.CLOSE:
            await self.close("client close", notify=False)
        elif packet.type in (engineio.NOOP, engineio.UPGRADE, engineio.PING):
            pass  # a PING or UPGRADE outside an upgrade is ignored
        else:
            raise engineio.PacketError("unexpected packet")

    # ------------------------------------------------------------------ heartbeat and close

    def start(self, handler: Handler) -> None:
        self.handler = handler
        self._schedule_ping()

    # Timers, not a task per session: a ping ``ping_interval`` after the last pong, and the end
    # of the session ``ping_timeout`` after a ping that no pong answered.
    def _schedule_ping(self) -> None:
        if not self.closed:
            self.heartbeat = asyncio.get_running_loop().call_later(self.engine.ping_interval, self._ping)

    def _ping(self) -> None:
        if self.closed:
            return
        self.pong = False
        asyncio.ensure_future(self._send_ping())
        self.heartbeat = asyncio.get_running_loop().call_later(self.engine.ping_timeout, self._ping_timed_out)

    async def _send_ping(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.send_packet(Packet(engineio.PING))

    def _ping_timed_out(self) -> None:
        if not self.pong and not self.closed:
            asyncio.ensure_future(self.close("ping timeout", notify=False))

    async def close(self, reason: str, *, notify: bool = True, code: int = 1000) -> None:
        """End the session: tell the client (``notify``: a close packet), release waiters, tell the handler."""
        if self.closed:
            return
        if notify:
            with contextlib.suppress(Exception):
                if self.ws_send is not None and not self.upgrading:
                    await self.ws_send(_ws_frame(engineio.encode(Packet(engineio.CLOSE))))
                else:
                    self.buffer.append(Packet(engineio.CLOSE))
                    self._wake()
        self.closed = True
        self.engine.sockets.pop(self.sid, None)
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        if self.drained is not None:
            self.drained.set()
        self._wake()
        if self.ws_send is not None:
            with contextlib.suppress(Exception):
                await self.ws_send({"type": "websocket.close", "code": code})
        if self.handler is not None:
            handler, self.handler = self.handler, None
            try:
                await handler.on_close(reason)
            except Exception:
                logger.exception("engine.io close handler of %s failed", self.sid)


async def _ignored() -> None:
    """What the engine does with a scope of another type (none reaches it from ``renum.asgi``)."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _ws_frame(frame: str | bytes) -> dict:
    if isinstance(frame, bytes):
        return {"type": "websocket.send", "bytes": frame}
    return {"type": "websocket.send", "text": frame}


class Engine:
    """An Engine.IO server at one path; ``make_handler(socket)`` creates each session's handler.

    ``allow(scope)`` decides whether a request may open a session (e.g. its Origin): a refusal
    is an HTTP 403 before anything else.
    """

    def __init__(self, make_handler: Callable[[EngineSocket], Handler], *, ping_interval: float,
                 ping_timeout: float, max_payload: int, allow: Callable[[dict], bool] | None = None,
                 cors: Callable[[dict], list[tuple[bytes, bytes]]] | None = None) -> None:
        self.make_handler = make_handler
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_payload = max_payload
        self.allow = allow or (lambda scope: True)
        self.cors = cors or (lambda scope: [])
        self.sockets: dict[str, EngineSocket] = {}

    def open_packet(self, sid: str, upgrades: list[str]) -> Packet:
        return Packet(engineio.OPEN, orjson.dumps({
            "sid": sid, "upgrades": upgrades, "pingInterval": int(self.ping_interval * 1000),
            "pingTimeout": int(self.ping_timeout * 1000), "maxPayload": self.max_payload,
        }).decode())

    def _new_socket(self, scope: dict, transport: str, sid: str | None = None) -> EngineSocket:
        sid = sid or secrets.token_urlsafe(15)
        socket = EngineSocket(self, sid, scope, transport)
        self.sockets[sid] = socket
        return socket

    @markcoroutinefunction
    def __call__(self, scope: dict, receive: Receive, send: Send) -> Awaitable[None]:
        """The ASGI application: a plain function returning the transport's coroutine (an
        ``async def`` awaiting it would keep one more frame under every socket for its life)."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        eio = query.get("EIO", [""])[0]
        transport = query.get("transport", [""])[0]
        sid = query.get("sid", [None])[0]
        if scope["type"] == "websocket":
            return self._websocket(scope, receive, send, eio, transport, sid)
        if scope["type"] == "http":
            return self._http(scope, receive, send, eio, transport, sid)
        return _ignored()

    # ------------------------------------------------------------------ HTTP long-polling

    async def _respond(self, scope: dict, send: Send, status: int, body: bytes,
                       content_type: bytes = b"text/plain; charset=UTF-8") -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-store"), *self.cors(scope)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, scope: dict, send: Send, status: int, code: int, message: str) -> None:
        await self._respond(scope, send, status, orjson.dumps({"code": code, "message": message}),
                            b"application/json")

    async def _http(self, scope: dict, receive: Receive, send: Send, eio: str, transport: str,
                    sid: str | None) -> None:
        method = scope.get("method")
        if method == "OPTIONS":
            headers = self.cors(scope)
            if headers:
                headers = [*headers, (b"access-control-allow-methods", b"GET, POST"),
                           (b"access-control-allow-headers", b"content-type")]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if eio != "4":
            return await self._error(scope, send, 400, 5, "Unsupported protocol version")
        if transport != "polling":
            return await self._error(scope, send, 400, 0, "Transport unknown")
        if not self.allow(scope):
            return await self._error(scope, send, 403, 4, "Forbidden")
        if sid is None:
            if method != "GET":
                return await self._error(scope, send, 400, 2, "Bad handshake method")
            socket = self._new_socket(scope, "polling")
            socket.start(self.make_handler(socket))
            body = engineio.encode_payload([self.open_packet(socket.sid, ["websocket"])])
            return await self._respond(scope, send, 200, body.encode())
        socket = self.sockets.get(sid)
        if socket is None or socket.transport != "polling":
            return await self._error(scope, send, 400, 1, "Session ID unknown")
        if method == "GET":
            await self._poll(socket, scope, receive, send)
        elif method == "POST":
            await self._post(socket, scope, receive, send)
        else:
            await self._error(scope, send, 400, 2, "Bad request")

    async def _poll(self, socket: EngineSocket, scope: dict, receive: Receive, send: Send) -> None:
        if socket.waiter is not None:  # the pending GET gets a close packet, this one an error
            await socket.close("duplicate poll")
            return await self._error(scope, send, 400, 3, "Bad request")
        if socket.upgrading:  # the client is moving to a WebSocket: this GET ends polling
            return await self._respond(scope, send, 200, b"6")
        if not socket.buffer and not socket.closed:
            while (message := await receive())["type"] == "http.request" and message.get("more_body"):
                pass  # a GET's (empty) body; after it, the next message is the client leaving
            if message["type"] == "http.disconnect":
                await socket.close("transport close", notify=False)
                return
            socket.waiter = asyncio.get_running_loop().create_future()
            gone = asyncio.ensure_future(_disconnected(receive))
            try:
                await asyncio.wait((socket.waiter, gone), return_when=asyncio.FIRST_COMPLETED)
            finally:
                socket.waiter = None
            if gone.done():  # the client cancelled its request
                await socket.close("transport close", notify=False)
                return
            gone.cancel()
        if socket.upgrading:  # what is buffered goes out on the WebSocket once upgraded
            return await self._respond(scope, send, 200, b"6")
        packets = socket.take_buffer()
        if not packets and socket.closed:
            packets = [Packet(engineio.NOOP)]
        elif not packets:  # woken by an upgrade
            packets = [Packet(engineio.NOOP)]
        await self._respond(scope, send, 200, engineio.encode_payload(packets).encode())

    async def _post(self, socket: EngineSocket, scope: dict, receive: Receive, send: Send) -> None:
        if socket.posting:
            await socket.close("duplicate post", notify=False)
            return await self._error(scope, send, 400, 3, "Bad request")
        socket.posting = True
        try:
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.engine_max_body:
                    await socket.close("payload too large", notify=False)
                    return await self._error(scope, send, 413, 3, "Payload too large")
                if not message.get("more_body"):
                    break
            try:
                packets = engineio.decode_payload(b"".join(chunks).decode())
            except (engineio.PacketError, UnicodeDecodeError):
                await socket.close("parse error", notify=False)
                return await self._error(scope, send, 400, 3, "Bad request")
            for packet in packets:
                if socket.closed:
                    break
                await socket.on_packet(packet)
        except engineio.PacketError:
            await socket.close("parse error", notify=False)
            return await self._error(scope, send, 400, 3, "Bad request")
        finally:
            socket.posting = False
        await self._respond(scope, send, 200, b"ok", b"text/html")

    @property
    def engine_max_body(self) -> int:
        return self.max_payload

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self, scope: dict, receive: Receive, send: Send, eio: str, transport: str,
                         sid: str | None) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if eio != "4" or transport != "websocket" or not self.allow(scope):
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        if sid is not None:
            socket = self.sockets.get(sid)
            if socket is None or socket.transport != "polling" or socket.upgrading or socket.closed:
                await send({"type": "websocket.accept"})  # a close the client sees, not a failed handshake
                await send({"type": "websocket.close", "code": 1008})
                return
            await send({"type": "websocket.accept", KEEPALIVE: False})  # Engine.IO pings itself
            await self._upgrade(socket, receive, send)
            return
        sid = secrets.token_urlsafe(15)
        opening = engineio.encode(self.open_packet(sid, []))
        if TEXTS in scope.get("extensions", ()):  # the OPEN packet in the handshake's write
            await send({"type": "websocket.accept", KEEPALIVE: False, TEXTS: [opening]})
        else:
            await send({"type": "websocket.accept", KEEPALIVE: False})  # Engine.IO pings itself
            await send(_ws_frame(opening))
        socket = self._new_socket(scope, "websocket", sid)
        socket.ws_send = send
        socket.start(self.make_handler(socket))
        await self._ws_loop(socket, receive)

    async def _ws_loop(self, socket: EngineSocket, receive: Receive) -> None:
        try:
            while not socket.closed:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    await socket.close("transport close", notify=False)
                    return
                if message["type"] != "websocket.receive":
                    continue
                data = message.get("text")
                frame = data if data is not None else message.get("bytes") or b""
                if len(frame) > self.max_payload:
                    await socket.close("payload too large", notify=False, code=1009)
                    return
                await socket.on_packet(engineio.decode(frame))
        except engineio.PacketError:
            await socket.close("parse error", notify=False, code=1002)
        except Exception:
            logger.exception("engine.io session %s failed", socket.sid)
            await socket.close("server error", notify=False, code=1011)
        finally:
            if not socket.closed:
                await socket.close("transport close", notify=False)

    async def _upgrade(self, socket: EngineSocket, receive: Receive, send: Send) -> None:
        """Probe (``2probe`` / ``3probe``), then ``5``: the session moves to this WebSocket."""
        socket.upgrading = True
        socket.ws_send = send
        try:
            message = await receive()
            if message["type"] != "websocket.receive" or message.get("text") != "2probe":
                raise engineio.PacketError("expected a probe")
            await send(_ws_frame("3probe"))
            socket._wake()  # the pending GET answers with a noop: the client pauses polling
            message = await receive()
            if message["type"] != "websocket.receive" or message.get("text") != "5":
                raise engineio.PacketError("expected an upgrade")
        except (engineio.PacketError, KeyError):
            socket.upgrading, socket.ws_send = False, None
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": 1002})
            return
        if socket.closed:
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": 1000})
            return
        socket.transport = "websocket"
        socket.upgrading = False
        for packet in socket.take_buffer():
            await send(_ws_frame(engineio.encode(packet)))
        socket._wake()
        await self._ws_loop(socket, receive)
