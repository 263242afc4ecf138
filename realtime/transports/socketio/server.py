"""The Socket.IO 5 layer over an Engine.IO session: namespaces, CONNECT, events and acks.

``Connection`` is the Engine.IO handler of one session: it decodes Socket.IO packets and
hands them to the namespace socket the application created on CONNECT (``Namespace``). A
client that sends no CONNECT within ``connect_timeout`` seconds, or a malformed packet, has its
Engine.IO session closed, as the protocol asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from realtime.transports.socketio import parser
from realtime.transports.socketio.engine import EngineSocket

logger = logging.getLogger("realtime.transports.socketio")


class Namespace(Protocol):
    """One client's socket in one namespace (created on CONNECT by the application)."""

    async def connect(self, auth: Any) -> None:
        """Answer the CONNECT: ``Connection.connected`` or ``Connection.refuse``."""

    async def event(self, args: list, ack_id: int | None) -> None:
        """A client event (``args[0]`` is its name)."""

    async def disconnect(self, reason: str) -> None:
        """The namespace socket ended (client DISCONNECT, or the Engine.IO session closed)."""


NamespaceFactory = Callable[["Connection", str], Namespace]


class Connection:
    """The Socket.IO side of one Engine.IO session."""

    __slots__ = ("socket", "namespaces", "decoder", "sockets", "on_pong_hooks", "_connect_timer")

    def __init__(self, socket: EngineSocket, namespaces: dict[str, NamespaceFactory], *,
                 connect_timeout: float) -> None:
        self.socket = socket
        self.namespaces = namespaces
        self.decoder = parser.Decoder()
        self.sockets: dict[str, Namespace] = {}
        self.on_pong_hooks: list[Callable[[], None]] = []
        # Dropped once a namespace is connected: a cancelled timer kept for the socket's life is
        # a handle and a bound method per socket.
        self._connect_timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            connect_timeout, self._no_connect)

    def _no_connect(self) -> None:
        if not self.sockets and not self.socket.closed:
            asyncio.ensure_future(self.socket.close("no CONNECT", notify=False))

    def on_pong(self) -> None:
        for hook in self.on_pong_hooks:
            hook()

    # ------------------------------------------------------------------ sending

    async def send_text(self, text: str) -> None:
        """Send one Socket.IO packet already encoded (``parser.encode_event`` and friends)."""
        await self.socket.send(text)

    async def send(self, packet: parser.Packet) -> None:
        for part in parser.encode(packet):
            await self.socket.send(part)

    async def connected(self, namespace: str, sid: str | None = None, extra: dict | None = None) -> str:
        """Accept the namespace's CONNECT; returns the Socket.IO socket id."""
        sid = sid or secrets.token_urlsafe(15)
        await self.send_text(self.connect_text(namespace, sid, extra))
        return sid

    def connect_text(self, namespace: str, sid: str, extra: dict | None = None) -> str:
        """The packet that accepts the namespace's CONNECT (to send, with what follows it, as
        ``send_texts``); the CONNECT timeout ends here."""
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        return parser.encode(parser.Packet(parser.CONNECT, namespace, {"sid": sid, **(extra or {})}))[0]

    def send_texts(self, texts: list[str]) -> Awaitable[None]:
        """Send Socket.IO packets already encoded, in order (in one write where the server can)."""
        return self.socket.send_texts(texts)

    async def refuse(self, namespace: str, message: str, data: Any = None) -> None:
        """Refuse the namespace's CONNECT (CONNECT_ERROR)."""
        self.sockets.pop(namespace, None)
        body: dict[str, Any] = {"message": message}
        if data is not None:
            body["data"] = data
        await self.send(parser.Packet(parser.CONNECT_ERROR, namespace, body))

    async def disconnect(self, namespace: str) -> None:
        """End the namespace's socket from the server (the client does not reconnect it)."""
        if self.sockets.pop(namespace, None) is not None:
            with contextlib.suppress(ConnectionError):
                await self.send(parser.Packet(parser.DISCONNECT, namespace))

    # ------------------------------------------------------------------ receiving

    async def on_message(self, data: str | bytes) -> None:
        try:
            packet = self.decoder.feed(data)
            if packet is None:
                return
            await self._dispatch(packet)
        except parser.PacketError as error:
            logger.info("engine.io session %s: %s; closing", self.socket.sid, error)
            await self.socket.close("parse error", notify=False, code=1002)
        except ConnectionError:
            pass  # the session closed meanwhile; its close handler ended the namespaces

    async def _dispatch(self, packet: parser.Packet) -> None:
        namespace = packet.namespace
        if packet.type == parser.CONNECT:
            factory = self.namespaces.get(namespace)
            if factory is None:
                await self.send(parser.Packet(parser.CONNECT_ERROR, namespace, {"message": "Invalid namespace"}))
                return
            if namespace in self.sockets:
                raise parser.PacketError("namespace already connected")
            self.sockets[namespace] = socket = factory(self, namespace)
            await socket.connect(packet.data)
            return
        socket = self.sockets.get(namespace)
        if socket is None:
            return  # e.g. an event racing a server-side disconnect
        if packet.type == parser.DISCONNECT:
            del self.sockets[namespace]
            await socket.disconnect("client namespace disconnect")
        elif packet.type == parser.EVENT:
            await socket.event(packet.data, packet.id)
        elif packet.type == parser.ACK:
            pass  # the server asks for no acks
        else:
            raise parser.PacketError("unexpected packet from a client")

    async def on_close(self, reason: str) -> None:
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        sockets, self.sockets = self.sockets, {}
        for socket in sockets.values():
            try:
                await socket.disconnect(reason)
            except Exception:
                logger.exception("disconnect of a namespace socket failed")


def ack_text(namespace: str, ack_id: int, raw_args: list[str]) -> str:
    """An ACK packet's text from arguments already serialized as JSON."""
    head = "3" if namespace == "/" else f"3{namespace},"
    return f"{head}{ack_id}[{','.join(raw_args)}]"


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
