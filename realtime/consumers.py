"""The socket session: authenticate, subscribe, recover, answer commands. No domain logic.

One ``RealtimeConsumer`` per socket. Data messages do not pass through the channel layer:
the process's hub calls ``deliver`` with an already serialized frame.
The channel layer carries only per-user control messages (server-side subscribe,
unsubscribe, disconnect), through the group ``rt.user.<id>`` of the process channels where
the user is connected (``realtime.control``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from redis.exceptions import RedisError

from realtime import auth, limits, logs, metrics, security, sessions
from realtime.channels import BROADCAST, authorize_subscribe, call_check, policy_for, user_channel
from realtime.commands import run_command
from realtime.conf import setting
from realtime.hub import Outbox
from realtime.limits import TokenBucket
from realtime.node import Node, get_node
from realtime.publish import apublish
from realtime.recovery import catch_up
from realtime.schemas import (
    AuthRefresh,
    Command,
    Ping,
    ProtocolError,
    Publish,
    Subscribe,
    Unsubscribe,
    frame,
    parse_command,
    validate_channel_name,
)

logger = logging.getLogger("realtime.consumers")


_CONNECTION_ID_PREFIX = uuid.uuid4().hex[:16]
_connection_numbers = itertools.count(1)


_CONNECTS_OK = metrics.CONNECTS.labels("ok")


def _new_connection_id() -> str:
    """A connection id unique across processes: a random per-process prefix and a counter
    (``uuid4`` per socket costs a system call on every connect)."""
    return f"{_CONNECTION_ID_PREFIX}{next(_connection_numbers):016x}"


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class RealtimeConsumer(AsyncWebsocketConsumer):
    """One WebSocket session of the Renum realtime protocol (see docs/protocol.md)."""

    node: Node
    identity: auth.Identity | None = None
    session_key: str | None = None  # of a session-cookie socket (``realtime.sessions``)

    # ------------------------------------------------------------------ dispatch

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Handle the socket's ASGI messages one at a time, without a channel-layer channel of its own.

        Channels' loop opens a channel per consumer and waits on it and on the socket with two
        tasks. Control messages reach this process's control plane instead (``realtime.control``),
        which hands them to ``control``; ``_turn`` keeps them from interleaving with the
        socket's own messages, as Channels' single loop would.
        """
        self.scope = scope
        self.base_send = send
        self.channel_layer = None
        self.channel_name = ""
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
            logger.exception("connection %s failed", getattr(self, "connection_id", "-"))
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
        """End the session: refuse further frames, leave hub, control group and registry (idempotent)."""
        outbox = getattr(self, "outbox", None)
        if outbox is not None:
            outbox.close()
        if self.identity is None:
            return
        self.identity, identity = None, self.identity
        if getattr(self, "counted", False):
            self.counted = False
            metrics.CONNECTIONS.dec()
        try:
            await self._end_session(identity)
        except Exception:
            logger.exception("cleanup of connection %s failed", self.connection_id)

    def control(self, message: dict) -> None:
        """Handle a control message from the process's control plane, in turn with socket messages."""
        asyncio.ensure_future(self._handle_control(message))

    async def _handle_control(self, message: dict) -> None:
        async with self._turn:
            if self.identity is None:  # closed meanwhile
                return
            try:
                await self.dispatch(message)
            except Exception:
                logger.exception("control message %s failed", message.get("type"))

    async def dispatch(self, message: dict) -> None:
        """Route an ASGI or channel-layer message to its handler.

        Channels awaits ``aclose_old_connections()`` (a hop through the sync thread) before
        every handler; database work here goes through ``database_sync_to_async``, which
        closes stale connections itself, so the hop is skipped on this hot path.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    # ------------------------------------------------------------------ connect

    async def websocket_connect(self, message: dict) -> None:
        """Check origin and credentials, then greet with ``welcome``."""
        self.connection_id = _new_connection_id()
        self.held: list[tuple[str, int, str, bytes]] | None = []
        self.subscribed: set[str] = set()
        self.closing = False
        self.last_seen = time.monotonic()
        self.connected_at = time.time()
        self.invalid_frames = 0
        self.rate_strikes = 0
        self.bucket = TokenBucket(setting("COMMAND_RATE"), setting("COMMAND_BURST"))
        self.outbox = Outbox(self.base_send, setting("OUTBOX_MAX_BYTES"), self._on_slow)
        self.ip = (self.scope.get("client") or ("", 0))[0]
        logs.connection_id.set(self.connection_id)
        if not auth.origin_allowed(self.scope):
            metrics.CONNECTS.labels("origin_rejected").inc()
            await security.record("origin_rejected", ip=self.ip, detail=auth.header(self.scope, b"origin") or "")
            await self.close()  # before accept: the handshake is refused with HTTP 403
            return
        subprotocol = auth.SUBPROTOCOL if auth.SUBPROTOCOL in self.scope.get("subprotocols", ()) else None
        retry_after = await limits.connect_attempt(self.ip)
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
            await security.record("auth_failure", ip=self.ip, detail=str(failure))
            await self.accept(subprotocol)
            await self.close(code=4001, reason=str(failure)[:120])
            return
        logs.user_id.set(identity.user_id)
        session = self.scope.get("session") if identity.method == "session" else None
        self.session_key = session.session_key if session is not None else None
        await self.accept(subprotocol)
        self.identity = identity  # from here on, every way out runs ``_finish``
        await self._start_session()

    async def _start_session(self) -> None:
        identity = self.identity
        self.user_key = identity.user_id.encode()
        self.node = await get_node()
        own = (user_channel(identity.user_id), BROADCAST)
        self.subscribed.update(own)  # listed in the registry entry from the start
        try:
            # Deliveries are held until the welcome is out.
            count, reads = await self.node.attach(self, self.registry_entry(), own)
        except BaseException:
            self.identity = None
            await self._end_session(identity)
            raise
        if count > setting("MAX_CONNECTIONS_PER_USER"):
            self.identity = None
            await self._end_session(identity)
            metrics.CONNECTS.labels("too_many").inc()
            await security.record("too_many_connections", ip=self.ip, user_id=identity.user_id)
            await self.close(code=4003, reason="too many connections for this user")
            return
        _CONNECTS_OK.inc()
        metrics.CONNECTIONS.inc()
        self.counted = True
        positions = dict(zip(own, reads, strict=True))
        hub = self.node.hub
        for channel, position in positions.items():
            hub.note_position(channel, position.epoch, position.offset)
        self.outbox.push(frame("welcome", {
            "user_id": identity.user_id,
            "connection_id": self.connection_id,
            "expires_at": _iso(identity.expires_at),
            "heartbeat_s": setting("HEARTBEAT_S"),
            "channels": {c: {"epoch": p.epoch, "offset": p.offset} for c, p in positions.items()},
        }))
        self._release({c: p.offset for c, p in positions.items()})

    async def _end_session(self, identity: auth.Identity) -> None:
        """Leave the channels, the control routing and the registry that a session start joined."""
        if getattr(self, "node", None) is None:  # ended before the session started
            return
        await self.node.detach(self, identity.user_id)

    def registry_entry(self) -> dict[str, Any]:
        """This socket's entry in the connection registry (``realtime.registry``)."""
        client = self.scope.get("client") or ("", 0)
        query_string = self.scope.get("query_string", b"")
        query = parse_qs(query_string.decode("latin-1")) if query_string else {}
        return {
            "connection_id": self.connection_id,
            "user_id": self.identity.user_id,
            "username": self.identity.user.get_username(),
            "ip": client[0],
            "user_agent": (auth.header(self.scope, b"user-agent") or "")[:200],
            "client_id": query.get("client_id", [""])[0][:64],
            "auth": self.identity.method,
            "connected_at": self.connected_at,
            "last_activity": time.time() - (time.monotonic() - self.last_seen),
            "channels": sorted(getattr(self, "subscribed", ())),
            # Where control messages for this socket go: its process's channel (realtime.control).
            "channel_name": self.node.control_channel,
        }

    # ------------------------------------------------------------------ delivery (called by the hub)

    def deliver(self, channel: str, offset: int, text: str, key: bytes = b"", message: dict | None = None) -> None:
        """Send a channel message, or hold it while a welcome or recovery is being sent."""
        if self.held is None:
            self.outbox.push(text, key, message)
        else:
            self.held.append((channel, offset, text, key))

    def _release(self, sent_up_to: dict[str, int]) -> None:
        """Flush held messages, skipping those already covered by the replay or position sent."""
        held, self.held = self.held or [], None
        for channel, offset, text, key in held:
            if offset > sent_up_to.get(channel, -1):
                self.outbox.push(text, key)

    def _on_slow(self) -> None:
        metrics.SLOW_CONSUMERS.inc()
        self.close_soon(4009, "slow consumer: reconnect and resume")

    def close_soon(self, code: int, reason: str) -> None:
        """Close the socket from synchronous code (hub, sweeps)."""
        if not self.closing:
            self.closing = True
            asyncio.ensure_future(self.close(code=code, reason=reason))

    # ------------------------------------------------------------------ inbound frames

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle one client frame; every bad frame gets an ``error`` and the socket stays open."""
        # Frames that arrive after a policy close (4008, 4029) was decided are not handled:
        # no second security event, no second close.
        if self.identity is None or self.closing:
            return
        self.last_seen = time.monotonic()
        raw = text_data if text_data is not None else bytes_data
        command: Any = None
        try:
            limit = setting("MAX_FRAME_BYTES")
            if len(raw) > limit or (isinstance(raw, str) and len(raw) * 4 > limit and len(raw.encode()) > limit):
                raise ProtocolError("too_large", f"frames are limited to {limit} bytes")
            if not self.bucket.take():
                self.rate_strikes += 1
                metrics.RATE_LIMITED.labels("commands").inc()
                if self.rate_strikes >= setting("RATE_LIMIT_STRIKES"):
                    self.closing = True
                    await security.record("rate_limited", ip=self.ip, user_id=self.identity.user_id)
                    await self.close(code=4029, reason=f"rate limited; retry after {setting('RATE_LIMIT_RETRY_S')}s")
                    return
                raise ProtocolError("rate_limited", f"slow down: retry in {self.bucket.seconds_until_token():.2f}s")
            self.rate_strikes = 0
            command = parse_command(raw)
            try:
                await self._handle(command)
            except RedisError as exc:
                logger.warning("connection %s: Redis unavailable for a %s: %s", self.connection_id,
                               type(command).__name__, exc)
                error = ProtocolError("unavailable", "the service is temporarily unavailable; retry later")
                error.reply_to = command.id
                raise error from None
        except ProtocolError as error:
            metrics.PROTOCOL_ERRORS.labels(error.code).inc()
            if error.code in ("invalid_json", "invalid_message", "too_large", "unknown_command"):
                self.invalid_frames += 1
            if error.code == "too_large":
                await security.record("too_large", ip=self.ip, user_id=self.identity.user_id, detail=error.message)
            elif error.code == "forbidden":
                await security.record("forbidden", ip=self.ip, user_id=self.identity.user_id, detail=error.message)
            self.outbox.push(frame("error", {"code": error.code, "message": error.message}, error.reply_to))
            if self.invalid_frames > setting("MAX_INVALID_FRAMES"):
                self.closing = True
                await security.record("invalid_frames", ip=self.ip, user_id=self.identity.user_id)
                await self.close(code=4008, reason="too many invalid or oversized messages")
        except Exception:
            # A bug or a failed dependency in a handler: logged with the connection, answered,
            # and the session goes on (its state was not changed by the failed command).
            logger.exception("connection %s: a frame failed", self.connection_id)
            metrics.PROTOCOL_ERRORS.labels("internal").inc()
            self.outbox.push(frame("error", {"code": "internal", "message": "internal error; see the server log"},
                                   getattr(command, "id", None)))

    async def _handle(self, command: Any) -> None:
        try:
            if isinstance(command, Ping):
                self.outbox.push(frame("pong", None, command.id))
            elif isinstance(command, Subscribe):
                await self._subscribe(command.channel, command.since, command.id)
            elif isinstance(command, Unsubscribe):
                await self._unsubscribe(command.channel, command.id)
            elif isinstance(command, Command):
                result = await run_command(self.identity.user, command.payload.name, command.payload.args)
                self.outbox.push(frame("command_result", {"name": command.payload.name, "result": result}, command.id))
            elif isinstance(command, Publish):
                await self._publish(command)
            elif isinstance(command, AuthRefresh):
                await self._refresh(command)
        except ProtocolError as error:
            if error.reply_to is None:
                error.reply_to = command.id
            raise

    async def _subscribe(self, channel: str, since: Any, reply_to: Any, *, checked: bool = False) -> None:
        if checked:
            validate_channel_name(channel)
            policy = policy_for(channel)
        else:
            policy = await authorize_subscribe(self.identity.user, channel)
        if channel not in self.subscribed and len(self.subscribed) >= setting("MAX_CHANNELS_PER_CONNECTION"):
            raise ProtocolError("limit_exceeded", "too many channels on this connection")
        self.held = self.held if self.held is not None else []
        try:
            if channel not in self.subscribed:
                await self.node.hub.join(self, channel)
                self.subscribed.add(channel)
            caught = await catch_up(policy, self.identity.user, self.user_key, channel,
                                    (since.epoch, since.offset) if since is not None else None)
        except BaseException:
            self._release({})
            raise
        self.node.hub.note_position(channel, caught.epoch, caught.offset)
        # `replayed` tells the client how many of the frames that follow are the replay, so it
        # knows when its position may move past them (an extension of the v1 reply).
        self.outbox.push(frame("subscribed", {
            "channel": channel, "epoch": caught.epoch, "offset": caught.offset, "recovered": caught.recovered,
            "replayed": len(caught.replay),
        }, reply_to))
        for _, text in caught.replay:
            self.outbox.push(text)  # never coalesced: the client counts these frames
        if caught.snapshot is not None:
            self.outbox.push(caught.snapshot)
        self._release({channel: caught.offset})

    async def _unsubscribe(self, channel: str, reply_to: Any) -> None:
        validate_channel_name(channel)
        if channel not in self.subscribed:
            raise ProtocolError("not_found", f"not subscribed to {channel}")
        self.subscribed.discard(channel)
        await self.node.hub.leave(self, channel)
        self.outbox.push(frame("unsubscribed", {"channel": channel}, reply_to))

    async def _publish(self, command: Publish) -> None:
        channel = validate_channel_name(command.channel)
        policy = policy_for(channel)
        if policy.can_publish is None or not await call_check(policy.can_publish, self.identity.user, channel):
            raise ProtocolError("forbidden", f"clients may not publish to {channel}")
        try:
            published = await apublish(channel, command.event, command.payload, sender=f"user:{self.identity.user_id}")
        except (ValueError, TypeError) as exc:
            raise ProtocolError("invalid_message", str(exc)) from None
        if published is None:
            raise ProtocolError("unavailable", "the message could not be published; retry later")
        self.outbox.push(frame("published", {"channel": channel, "offset": published.offset,
                                             "epoch": published.epoch}, command.id))

    async def _refresh(self, command: AuthRefresh) -> None:
        try:
            user, expires_at = await auth.user_from_token(command.token)
        except auth.AuthFailure as failure:
            await security.record("auth_failure", ip=self.ip, user_id=self.identity.user_id,
                                  detail=f"auth.refresh: {failure}")
            raise ProtocolError("unauthorized", str(failure)) from None
        if str(user.pk) != self.identity.user_id:
            raise ProtocolError("forbidden", "the token belongs to another user")
        self.identity = auth.Identity(user, expires_at, self.identity.method)
        self.outbox.push(frame("auth.refreshed", {"expires_at": _iso(expires_at)}, command.id))

    # ------------------------------------------------------------------ control (channel layer)

    async def rt_subscribe(self, event: dict) -> None:
        """Server-side subscribe of this user's connections (e.g. the user joined a team)."""
        if self.identity is not None and event["channel"] not in self.subscribed:
            try:
                await self._subscribe(event["channel"], None, None, checked=True)
            except ProtocolError as error:
                logger.warning("server-side subscribe to %s failed: %s", event["channel"], error.message)

    async def rt_unsubscribe(self, event: dict) -> None:
        """Server-side unsubscribe (e.g. the user left a team)."""
        if self.identity is not None and event["channel"] in self.subscribed:
            await self._unsubscribe(event["channel"], None)

    async def rt_disconnect(self, event: dict) -> None:
        """Close this socket on the server's request (admin action, deactivated user)."""
        target = event.get("connection_id")
        if "auth" in event and (self.identity is None or self.identity.method != event["auth"]):
            return  # e.g. a logout closes session-cookie sockets, not the user's token sockets
        if "session" in event and (self.session_key is None
                                   or sessions.session_tag(self.session_key) != event["session"]):
            return  # another session of the same user
        if target is None or target == self.connection_id:
            await self.close(code=event.get("code", 1000), reason=event.get("reason", ""))

    # ------------------------------------------------------------------ disconnect

    async def websocket_disconnect(self, message: dict) -> None:
        """Leave every channel and the registry; then stop the consumer."""
        await self._finish()
        raise StopConsumer()
