"""The v1 WebSocket transport: a Channels consumer that carries one session (``realtime.core.session``).

It checks the handshake (origin, connect rate, credentials), creates the session once the
client is authenticated, hands it the socket's frames one at a time and closes the socket
when the session asks. The session holds every protocol decision; this module holds what is
WebSocket and ASGI: accept, close codes before and after the handshake, the scope.

Data messages do not pass through the channel layer: the process's hub writes already
serialized frames to the session's outbox. The channel layer carries only per-user control
messages, through the process's control plane (``realtime.fanout.control``) to ``Session.control``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from realtime.core import auth, limits, security
from realtime.core.session import Session
from realtime.ops import logs, metrics

logger = logging.getLogger("realtime.transports.consumers")


_CONNECTION_ID_PREFIX = uuid.uuid4().hex[:16]
_connection_numbers = itertools.count(1)


def _new_connection_id() -> str:
    """A connection id unique across processes: a random per-process prefix and a counter
    (``uuid4`` per socket costs a system call on every connect)."""
    return f"{_CONNECTION_ID_PREFIX}{next(_connection_numbers):016x}"


class RealtimeConsumer(AsyncWebsocketConsumer):
    """The WebSocket transport of one session of the Renum realtime protocol (see docs/protocol.md)."""

    session: Session | None = None  # from the authenticated handshake on
    # No channel-layer channel nor groups of its own (control messages reach the session through
    # the node's control plane): class attributes, so that no socket stores them.
    channel_layer = None
    channel_name = ""
    groups = ()

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> Any:
        """Channels' ``as_asgi``, as a plain function returning the new consumer's coroutine:
        Channels' own is a coroutine awaiting it, a frame more kept under every socket."""

        def app(scope: dict, receive: Any, send: Any) -> Any:
            return cls(**initkwargs)(scope, receive, send)

        app.consumer_class = cls
        app.consumer_initkwargs = initkwargs
        app._asgi_single_callable = True  # a hint for asgiref: called once with (scope, receive, send)
        functools.update_wrapper(app, cls, updated=())
        return app

    # ------------------------------------------------------------------ dispatch

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Handle the socket's ASGI messages one at a time, without a channel-layer channel of its own.

        Channels' loop opens a channel per consumer and waits on it and on the socket with two
        tasks. Control messages reach this process's control plane instead (``realtime.fanout.control``),
        which hands them to the session; ``_turn`` keeps them from interleaving with the
        socket's own messages, as Channels' single loop would.
        """
        self.scope = scope
        self.base_send = send
        self._turn = asyncio.Lock()
        try:
            while True:
                message = await receive()
                async with self._turn:
                    await self.dispatch(message)
        except StopConsumer:
            pass
        except Exception:
            # A bug or a failed dependency outside the frame handlers (which answer `internal`
            # themselves): the socket is closed with 1011, never left open without a session.
            logger.exception("connection %s failed", logs.connection_id.get())
            await self._close_after_failure()
        finally:
            # Every way out (a disconnect, an exception, the task cancelled by a shutdown) ends
            # the session the same way: a socket must not stay in the hub and the registry.
            await self._finish()

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Accept the handshake (remembered: a close after it is a close code, before it a 403)."""
        self.accepted = True
        await super().accept(subprotocol, headers)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the socket; server-initiated closes of accepted sockets are counted by code."""
        if getattr(self, "accepted", False) and not getattr(self, "close_counted", False):
            self.close_counted = True
            metrics.DISCONNECTS.labels(str(code or 1000)).inc()
        await super().close(code, reason)

    async def _close_after_failure(self) -> None:
        try:
            if not getattr(self, "accepted", False):
                await self.accept()
            await self.close(code=1011, reason="internal error")
        except Exception:  # the transport is gone too; the cleanup below still runs
            pass

    async def _finish(self) -> None:
        """End the session, if one started (idempotent)."""
        if self.session is not None:
            await self.session.end()

    async def dispatch(self, message: dict) -> None:
        """Route an ASGI message to its handler.

        Channels awaits ``aclose_old_connections()`` (a hop through the sync thread) before
        every handler; database work here goes through ``database_sync_to_async``, which
        closes stale connections itself, so the hop is skipped on this hot path.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    def describe(self) -> tuple[str, str]:
        """The client's user agent and the ``client_id`` of its query string (the session's registry entry)."""
        query_string = self.scope.get("query_string", b"")
        query = parse_qs(query_string.decode("latin-1")) if query_string else {}
        return (auth.header(self.scope, b"user-agent") or "")[:200], query.get("client_id", [""])[0][:64]

    # ------------------------------------------------------------------ connect

    async def websocket_connect(self, message: dict) -> None:
        """Check origin and credentials, then start the session (which greets with ``welcome``)."""
        connection_id = _new_connection_id()
        connected_at = time.time()
        ip = (self.scope.get("client") or ("", 0))[0]
        logs.connection_id.set(connection_id)
        if not auth.origin_allowed(self.scope):
            metrics.CONNECTS.labels("origin_rejected").inc()
            await security.record("origin_rejected", ip=ip, detail=auth.header(self.scope, b"origin") or "")
            await self.close()  # before accept: the handshake is refused with HTTP 403
            return
        subprotocol = auth.SUBPROTOCOL if auth.SUBPROTOCOL in self.scope.get("subprotocols", ()) else None
        retry_after = await limits.connect_attempt(ip)
        if retry_after:
            metrics.CONNECTS.labels("rate_limited").inc()
            await self.accept(subprotocol)
            await self.close(code=4029, reason=f"too many connection attempts; retry after {retry_after}s")
            return
        try:
            identity = await auth.authenticate(self.scope)
        except auth.AuthFailure as failure:
            metrics.CONNECTS.labels("unauthorized").inc()
            metrics.AUTH_FAILURES.inc()
            await security.record("auth_failure", ip=ip, detail=str(failure))
            await self.accept(subprotocol)
            await self.close(code=4001, reason=str(failure)[:120])
            return
        logs.user_id.set(identity.user_id)
        session = self.scope.get("session") if identity.method == "session" else None
        await self.accept(subprotocol)
        # From here on every way out ends the session (``_finish``).
        self.session = Session(self, identity, connection_id=connection_id, ip=ip,
                               session_key=session.session_key if session is not None else None,
                               send=self.base_send, turn=self._turn, connected_at=connected_at)
        await self.session.start()
        self._forget_handshake()

    def _forget_handshake(self) -> None:
        """Let go of what only the handshake needed.

        The scope lives as long as the socket (the server keeps it too), with every request
        header and every offered subprotocol, the bearer token among them: a few KB per
        socket (more from browsers, with their cookies), for a user agent that ``describe``
        reads again later. The scope keeps that header and the query string, nothing else
        of the request.
        """
        scope = self.scope
        scope["headers"] = [item for item in scope.get("headers", ()) if item[0] == b"user-agent"]
        scope["subprotocols"] = ()
        scope.pop("session", None)  # its key was taken at connect (``Session.session_key``)
        scope.pop("user", None)

    # ------------------------------------------------------------------ inbound frames

    async def websocket_receive(self, message: dict) -> None:
        """Hand one client frame, text or binary, to the session (as directly as Channels' own
        ``websocket_receive`` hands it to ``receive``: no call more per frame)."""
        session = self.session
        if session is not None:
            text = message.get("text")
            await session.receive(text if text is not None else message["bytes"])

    # ------------------------------------------------------------------ disconnect

    async def websocket_disconnect(self, message: dict) -> None:
        """End the session (leave every channel and the registry); then stop the consumer."""
        await self._finish()
        raise StopConsumer()
