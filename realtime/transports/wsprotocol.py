"""uvicorn's websockets-sansio protocol, holding less per idle socket.

Served with ``--ws realtime.transports.wsprotocol:WebSocketProtocol``.

A server holds tens of thousands of sockets that are idle nearly all the time, so what each
one keeps after its handshake decides the server's memory. uvicorn's protocol keeps, for
the whole life of the socket:

- an ``asyncio.Queue`` for the messages the application receives and an ``asyncio.Event``
  for write back-pressure: together five ``collections.deque`` (each allocates a block of
  64 slots up front, ~620 bytes) and two objects with their dicts, for a queue that holds
  at most a message or two and an event nobody waits on while the socket keeps up;
- the handshake's websockets ``Request`` and ``Response``, with their ``Headers`` (a dict
  and lists per header name), which nothing reads once the response is sent (the
  application has the request's headers in its ``scope``).

This subclass replaces the queue and the event by two small objects with the same
behaviour for the calls uvicorn makes (``put_nowait``/``get``/``empty``;
``set``/``clear``/``wait``/``is_set``), allocated lazily, and lets go of the request and the
response once they are no longer needed. websockets' request parser, which goes on parsing
frames for the life of the socket, keeps the request in its frame: its headers are emptied
once the scope holds them (3 KB per idle Socket.IO socket of 20). An application with a
heartbeat of its own accepts with ``KEEPALIVE: False`` and gets no WebSocket pings beside
it, and one that has several texts to say at once sends them as ``TEXTS``. Measured on the
idle and storm scenarios of the load tool (see docs/performance.md).

It also writes a text message of an open connection without compression as one frame
made here (``text_frame``: a server's frames are not masked, so the header is two to ten
bytes before the payload), where uvicorn hands it to websockets, which builds a ``Frame``
and serializes it per call: that is most of a delivery's Python work. The frame of the
last text is kept, so a message the hub hands to every socket (the same string) is
encoded and framed once. Anything else (bytes, close, compression negotiated, back-pressure,
a frame of websockets' own not yet written, the handshake) is uvicorn's path, unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.protocol import OPEN

# A key of the ``websocket.accept`` message: ``False`` asks for no WebSocket pings from the
# server (the application has a heartbeat of its own, as Engine.IO does). Other servers
# ignore it, as ASGI servers ignore keys they do not know.
KEEPALIVE = "renum.keepalive"
# The ASGI extension (in the scope's ``extensions``) and the key of a ``websocket.send`` or a
# ``websocket.accept`` message holding several texts, written as that many text frames in one
# write (an accept's with the handshake's response): what one event has to say reaches the
# client in one segment and wakes it once.
TEXTS = "renum.texts"
# What a handshake request's headers become once the scope holds them (read only).
_NO_HEADERS = Headers()


class Inbox:
    """The subset of ``asyncio.Queue`` uvicorn's protocol uses, for one receiver at a time.

    Nothing is allocated while the inbox is empty and nobody waits: a list while messages
    wait, a future while the receiver waits.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list | None = None
        self._waiter: asyncio.Future | None = None

    def put_nowait(self, item: Any) -> None:
        """Append a message and wake the receiver (never blocks: the inbox is unbounded, as uvicorn's queue)."""
        if self._items is None:
            self._items = [item]
        else:
            self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        """Whether no message waits."""
        return not self._items

    def qsize(self) -> int:
        """How many messages wait."""
        return len(self._items) if self._items else 0

    async def get(self) -> Any:
        """The oldest message, waiting for one if none is there."""
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("an Inbox serves one receiver at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = self._items
        item = items.pop(0)
        if not items:
            self._items = None
        return item


class Writable:
    """The subset of ``asyncio.Event`` uvicorn's protocol uses for write back-pressure.

    ``wait`` on a set event returns without suspending (as ``asyncio.Event.wait`` does), so
    a send that does not meet back-pressure still completes in one step.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future] | None = None

    def is_set(self) -> bool:
        """Whether writes may go on."""
        return self._set

    def set(self) -> None:
        """Let writes go on; wakes every waiting writer."""
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        """Make writers wait (the transport's buffer is full)."""
        self._set = False

    async def wait(self) -> bool:
        """Return once writes may go on."""
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with a lean inbox and back-pressure event, and
    without the handshake's request and response once they are used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Writable()  # type: ignore[assignment]

    # False once the application accepted with ``KEEPALIVE: False``: it pings the client itself.
    keepalive = True

    def handle_connect(self, event: Any) -> None:
        """Build the scope from the request as uvicorn does, then let the request go (the
        response stays until the application accepts or refuses).

        websockets' request parser is a generator that goes on parsing frames for the life of
        the socket, and its frame keeps the request: the request's headers (a dict, a list per
        header name, the raw list) are replaced by one shared empty set once the scope holds them.
        """
        super().handle_connect(event)
        self.request = None
        event.headers = _NO_HEADERS
        if self.response.status_code == 101:  # else refused already (400): no scope, no application
            self.scope.setdefault("extensions", {})[TEXTS] = {}

    def start_keepalive(self) -> None:
        """Called once the accepting response was written: the response and the extension
        factories offered to the handshake are not needed any more."""
        self.response = None
        self.conn.available_extensions = []
        if self.keepalive:
            super().start_keepalive()

    async def send(self, message: Any) -> None:
        """uvicorn's ``send``, with a text message of an open, uncompressed connection written
        as one frame of ours (what websockets would write, byte for byte), ``TEXTS`` written
        together, and ``KEEPALIVE`` read from an accept."""
        text = message.get("text")
        if text is not None and message["type"] == "websocket.send" and message.get("bytes") is None:
            if self._frames_go_out_now():
                self.transport.write(_frame_of(text))
                return
        elif message["type"] == "websocket.send" and TEXTS in message:
            await self._send_texts(message[TEXTS])
            return
        elif message["type"] == "websocket.accept":
            if message.get(KEEPALIVE) is False:
                self.keepalive = False
            texts = message.get(TEXTS)
            if texts:
                await self._accept_with(message, texts)
                return
        await super().send(message)

    def _frames_go_out_now(self) -> bool:
        """Whether a text can be written as our own frame right now: the socket is open, keeps
        up, negotiated no compression, and websockets has nothing of its own left to write."""
        if not (self.handshake_complete and not self.close_sent and self.initial_response is None
                and not self.disconnected and self.writable.is_set()):
            return False
        conn = self.conn
        return conn.state is OPEN and not conn.extensions and not conn.expect_continuation_frame and not conn.writes

    async def _send_texts(self, texts: list[str]) -> None:
        """Several texts, a frame each, in one write when they can go out now; else one by one."""
        if self._frames_go_out_now():
            self.transport.write(b"".join(text_frame(text.encode()) for text in texts))
            return
        for text in texts:
            await super().send({"type": "websocket.send", "text": text})

    async def _accept_with(self, message: dict, texts: list[str]) -> None:
        """The accept, and ``texts`` in the same write as the handshake's response."""
        transport = self.transport
        held = _HeldWrites(transport)
        self.transport = held  # type: ignore[assignment]
        try:
            await super().send({key: value for key, value in message.items() if key != TEXTS})
        finally:
            self.transport = transport
        if self._frames_go_out_now():
            held.chunks.extend(text_frame(text.encode()) for text in texts)
            texts = []
        if held.chunks:
            transport.write(b"".join(held.chunks))
        if texts and self.handshake_complete:  # e.g. back-pressure already: uvicorn's path
            await self._send_texts(texts)


class _HeldWrites:
    """A transport whose writes are held (``chunks``) while uvicorn writes the handshake's
    response; everything else is the transport's."""

    __slots__ = ("transport", "chunks")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455, section 5.2) holding ``payload``."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


# The last text framed and its frame (the hub sends one text to many sockets), as one tuple
# replaced whole: a thread with an event loop of its own never pairs a text with another's frame.
_last: tuple[str | None, bytes] = (None, b"")


def _frame_of(text: str) -> bytes:
    global _last
    last = _last
    if last[0] is text:
        return last[1]
    frame = text_frame(text.encode())
    _last = (text, frame)
    return frame
