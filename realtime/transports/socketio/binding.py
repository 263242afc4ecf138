"""The Socket.IO binding of the Renum protocol: one ``realtime.core.session.Session`` per socket on ``/``.

This module is a codec, as the v1 WebSocket consumer is a transport: the session decides
everything (credentials aside, which come from the CONNECT ``auth`` payload instead of the
handshake). Client events become v1 command frames handed to ``Session.receive``; the
session's v1 frames, written by it and by the hub to the ``send`` it was given, become
Socket.IO packets on the way out:

- envelopes: an event named after their ``type``, the envelope as its argument, then the
  socket's recovery offset (``socket.io-client`` keeps the last string argument of an event);
- replies to client events: the event's ack (``{"error": {...}}`` for a refusal);
- ``welcome``, server-side ``subscribed`` / ``unsubscribed``: events of those names, with the
  offset too, so that the client's offset always names every channel it follows.

The offset is a cursor of every followed channel's (epoch, offset), the same cursor as the
event stream's (``realtime.transports.http.encode_cursor``): a CONNECT with ``pid`` and ``offset``
re-subscribes each channel from there through the session's own recovery, on any process,
after any restart. The ``pid`` is not looked up anywhere: it is answered back unchanged when
every channel was recovered, which is how ``socket.io-client`` sets ``socket.recovered``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qs

import orjson

from realtime.conf import setting
from realtime.core import auth, limits, security
from realtime.core.session import Session
from realtime.ops import metrics
from realtime.schemas import Position, ProtocolError, Subscribe
from realtime.transports.consumers import _new_connection_id
from realtime.transports.http import cors_headers, decode_cursor, encode_cursor
from realtime.transports.socketio import parser
from realtime.transports.socketio.engine import Engine, EngineSocket
from realtime.transports.socketio.server import Connection, ack_text, dumps

logger = logging.getLogger("realtime.transports.socketio")

# Client events, each the v1 command of the same name; their replies, and what the ack holds.
CLIENT_EVENTS = ("subscribe", "unsubscribe", "command", "publish", "auth.refresh")
_REPLIES = {"subscribed", "unsubscribed", "command_result", "published", "auth.refreshed", "error", "pong"}
# Closes after which the client must not reconnect by itself (a DISCONNECT packet); after any
# other the Engine.IO session is closed and socket.io-client reconnects and recovers.
_FINAL_CLOSES = {1000, 4001, 4003, 4008}
_RECOVERY_ID = "recover"
SOCKETIO_PATH = "/socket.io/"


def _ack_args(kind: str, payload: Any) -> Any:
    """The ack of a client event, from the v1 reply's type and payload."""
    if kind == "error":
        return {"error": {"code": payload.get("code"), "message": payload.get("message")}}
    if kind == "command_result":
        return {"result": payload.get("result")}
    return payload if payload is not None else {}


class RenumSocket:
    """A Socket.IO socket on ``/`` that carries one session; the session's ``Transport``."""

    __slots__ = ("conn", "namespace", "scope", "session", "turn", "positions", "pending", "acks", "since",
                 "recovery", "numbers", "connected", "closed")

    def __init__(self, connection: Connection, namespace: str) -> None:
        self.conn = connection
        self.namespace = namespace
        self.scope = connection.socket.scope
        self.session: Session | None = None
        self.turn = asyncio.Lock()
        self.positions: dict[str, tuple[str, int]] = {}
        # Held until the CONNECT is answered: envelopes, and other packets already encoded.
        self.pending: list[Outbound | str] | None = []
        self.acks: dict[str, int] = {}  # v1 command id -> Socket.IO ack id
        self.since: dict[str, tuple[str, int]] = {}  # v1 command id -> the subscribe's since
        self.recovery: dict[str, bool] = {}  # channel -> recovered, while connecting
        self.numbers = itertools.count(1)
        self.connected = False
        self.closed = False

    # ------------------------------------------------------------------ the session's Transport

    def describe(self) -> tuple[str, str]:
        query_string = self.scope.get("query_string", b"")
        query = parse_qs(query_string.decode("latin-1")) if query_string else {}
        return (auth.header(self.scope, b"user-agent") or "")[:200], query.get("client_id", [""])[0][:64]

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close as the session asks: CONNECT_ERROR before the CONNECT was answered, else a
        ``close`` event with the v1 code, then a DISCONNECT or the end of the Engine.IO session."""
        if self.closed:
            return
        self.closed = True
        code = code or 1000
        reason = reason or ""
        if self.session is not None:
            await self.session.end()
        try:
            if not self.connected:
                await self.conn.refuse(self.namespace, reason, {"code": code})
                return
            metrics.DISCONNECTS.labels(str(code)).inc()
            await self.conn.send_text(parser.encode_event("close", [dumps({"code": code, "reason": reason})]))
            if code in _FINAL_CLOSES:
                await self.conn.disconnect(self.namespace)
            else:
                await self.conn.socket.close("server close", code=code)
        except ConnectionError:
            pass

    # ------------------------------------------------------------------ connect

    async def connect(self, payload: Any) -> None:
        """Authenticate the CONNECT's ``auth``, start the session, recover from ``pid``/``offset``."""
        payload = payload if isinstance(payload, dict) else {}
        ip = (self.scope.get("client") or ("", 0))[0]
        connected_at = time.time()
        retry_after = await limits.connect_attempt(ip)
        if retry_after:
            metrics.CONNECTS.labels("rate_limited").inc()
            return await self._refuse(4029, f"too many connection attempts; retry after {retry_after}s")
        try:
            identity = await self._authenticate(payload)
        except auth.AuthFailure as failure:
            metrics.CONNECTS.labels("unauthorized").inc()
            metrics.AUTH_FAILURES.inc()
            await security.record("auth_failure", ip=ip, detail=str(failure))
            return await self._refuse(4001, str(failure)[:120])
        wanted = self._recovery_positions(payload)
        pid = payload.get("pid") if isinstance(payload.get("pid"), str) else None
        self.positions.update(wanted)
        connection_id = _new_connection_id()
        self.session = session = Session(self, identity, connection_id=connection_id, ip=ip, session_key=None,
                                         send=self._send, turn=self.turn, connected_at=connected_at)
        self.conn.on_pong_hooks.append(self._touch)
        async with self.turn:
            try:
                await session.start()
            except Exception:
                logger.exception("socket.io session start failed")
                return await self._refuse(1011, "internal error")
            if self.closed or session.identity is None:
                return  # refused by the session (too many connections): CONNECT_ERROR sent
            refused: list[dict] = []
            for channel, (epoch, offset) in wanted.items():
                command = Subscribe(type="subscribe", channel=channel, id=_RECOVERY_ID,
                                    since=Position(epoch=epoch, offset=offset))
                try:
                    await session.execute(command)
                except ProtocolError as error:
                    # Refused now (e.g. the user left the team): not followed, so no resync for it.
                    logger.info("socket %s: %s not recovered: %s", connection_id, channel, error.message)
                    self.recovery[channel] = False
                    self.positions.pop(channel, None)
                    refused.append({"channel": channel, "code": error.code, "message": error.message})
                except Exception:
                    logger.exception("socket %s: recovery of %s failed", connection_id, channel)
                    self.recovery[channel] = False
            recovered = bool(wanted) and pid is not None and all(self.recovery.get(c, False) for c in wanted)
            self.connected = True
            # The CONNECT's answer and everything held meanwhile, worked out in one go (nothing
            # is delivered between them) and sent together.
            texts = [self.conn.connect_text(self.namespace, connection_id,
                                            {"pid": pid if recovered else connection_id})]
            texts += self._take_pending()
            for channel, ok in self.recovery.items():
                if not ok and channel in self.positions:
                    epoch, offset = self.positions[channel]
                    texts.append(parser.encode_event("resync", [dumps(
                        {"channel": channel, "epoch": epoch, "offset": offset})]))
            for error in refused:
                texts.append(parser.encode_event("error", [dumps(error), dumps(self._cursor())]))
            self.recovery = {}
            await self.conn.send_texts(texts)

    async def _refuse(self, code: int, reason: str) -> None:
        self.closed = True
        await self.conn.refuse(self.namespace, reason, {"code": code})

    async def _authenticate(self, payload: dict) -> auth.Identity:
        token, ticket = payload.get("token"), payload.get("ticket")
        if isinstance(token, str) and token:
            return await auth.token_identity(token, "socketio")
        if isinstance(ticket, str) and ticket:
            return await auth.ticket_identity(ticket)
        raise auth.AuthFailure("missing credentials")

    @staticmethod
    def _recovery_positions(payload: dict) -> dict[str, tuple[str, int]]:
        offset = payload.get("offset")
        if not isinstance(offset, str) or not offset or len(offset) > 16_384:
            return {}
        try:
            positions = decode_cursor(offset)
        except ValueError:
            return {}
        # No more channels than a connection may follow: each one is authorized and read.
        return dict(list(positions.items())[:setting("MAX_CHANNELS_PER_CONNECTION")])

    def _touch(self) -> None:
        if self.session is not None:
            self.session.last_seen = time.monotonic()

    def _take_pending(self) -> list[str]:
        """What was held while connecting, as packets to send from now on: control events
        first, then each channel's envelopes in offset order, once each (a replay and a live
        delivery may overlap)."""
        pending, self.pending = self.pending or [], None
        texts = [entry for entry in pending if isinstance(entry, str)]
        envelopes = sorted((entry for entry in pending if not isinstance(entry, str)),
                           key=lambda e: (e.channel, e.offset))
        for outbound in envelopes:
            packet = self._envelope_packet(outbound, snapshot=False)
            if packet is not None:
                texts.append(packet)
        return texts

    # ------------------------------------------------------------------ disconnect and events

    async def disconnect(self, reason: str) -> None:
        """The client left (DISCONNECT, or its Engine.IO session ended): end the session."""
        if self.closed:
            return  # a close of our own (``close``), which ended the session itself
        self.closed = True
        if self.session is not None:
            # In turn: a polling session can end (ping timeout, a GET given up) while the
            # CONNECT is still starting the session or a client event is being answered.
            async with self.turn:
                await self.session.end()

    async def event(self, args: list, ack_id: int | None) -> None:
        """A client event: one of ``CLIENT_EVENTS``, handed to the session as the v1 command."""
        session = self.session
        if session is None or not self.connected:
            return
        name, body = args[0], args[1] if len(args) > 1 else None
        message_id = f"a{ack_id}" if ack_id is not None else f"n{next(self.numbers)}"
        if name not in CLIENT_EVENTS or not isinstance(body, dict) or parser.has_binary(args):
            if ack_id is not None:
                await self.conn.send_text(ack_text(self.namespace, ack_id, [dumps(_ack_args("error", {
                    "code": "unknown_command" if name not in CLIENT_EVENTS else "invalid_message",
                    "message": f"unknown event {name!r}" if name not in CLIENT_EVENTS
                    else "the event's argument must be an object without binary data"}))]))
            return
        if name == "command":
            command = {"type": "command", "id": message_id,
                       "payload": {"name": body.get("name"), "args": body.get("args", {})}}
        else:
            command = {**body, "type": name, "id": message_id}
            if name == "subscribe" and isinstance(body.get("since"), dict):
                since = body["since"]
                if isinstance(since.get("epoch"), str) and type(since.get("offset")) is int:
                    self.since[message_id] = (since["epoch"], since["offset"])
        if ack_id is not None:
            self.acks[message_id] = ack_id
        async with self.turn:
            await session.receive(orjson.dumps(command).decode())
        self.acks.pop(message_id, None)
        self.since.pop(message_id, None)

    # ------------------------------------------------------------------ outbound (the session's ASGI send)

    def _send(self, message: dict) -> Awaitable[None]:
        """Translate one v1 frame from the session's outbox into Socket.IO packets (await the result).

        A plain function: an envelope, once connected, goes out as the Engine.IO socket's own
        send (no coroutine of the binding's per delivery); every other frame takes ``_send_frame``.
        """
        text = message.get("text")
        if text is None:
            return _nothing()
        outbound = _outbound(text)
        if outbound.channel is None or self.pending is not None:
            return self._send_frame(outbound)
        packet = self._envelope_packet(outbound, outbound.snapshot)
        if packet is None:
            return _nothing()
        return self.conn.socket.send(packet)

    async def _send_frame(self, outbound: Outbound) -> None:
        """A frame that is not an envelope going out now: a reply, ``welcome``, a position change."""
        if outbound.channel is not None:  # an envelope while connecting
            self.pending.append(outbound)
            return
        frame = outbound.fields
        kind = frame.get("type")
        payload = frame.get("payload")
        reply_to = frame.get("reply_to")
        if reply_to == _RECOVERY_ID:
            if kind == "subscribed":
                self._note_subscribed(payload, self.positions.get(payload["channel"]))
                self.recovery[payload["channel"]] = bool(payload.get("recovered"))
            return
        if kind == "welcome" and isinstance(payload, dict):
            for name, position in (payload.get("channels") or {}).items():
                self.positions.setdefault(name, (position["epoch"], position["offset"]))
            await self._out(parser.encode_event("welcome", [dumps(payload), dumps(self._cursor())]))
            return
        if kind == "subscribed" and isinstance(payload, dict):
            self._note_subscribed(payload, self.since.get(reply_to) if isinstance(reply_to, str) else None)
        elif kind == "unsubscribed" and isinstance(payload, dict):
            self.positions.pop(payload.get("channel"), None)
        ack_id = self.acks.pop(reply_to, None) if isinstance(reply_to, str) else None
        if ack_id is not None:
            await self._out(ack_text(self.namespace, ack_id, [dumps(_ack_args(kind, payload))]))
        if kind in ("subscribed", "unsubscribed") or (kind not in _REPLIES) or (ack_id is None and kind == "error"):
            # Position changes carry the offset, so that a reconnect names every followed channel.
            await self._out(parser.encode_event(kind, [dumps(payload), dumps(self._cursor())]))

    def _note_subscribed(self, payload: dict, since: tuple[str, int] | None) -> None:
        channel, epoch, offset = payload["channel"], payload["epoch"], payload["offset"]
        if payload.get("recovered") and since is not None and since[0] == epoch:
            # The replay follows: the position moves as its envelopes go out.
            current = self.positions.get(channel)
            floor = since[1] if current is None or current[0] != epoch else min(current[1], since[1])
            self.positions[channel] = (epoch, floor)
        else:
            self.positions[channel] = (epoch, offset)

    async def _out(self, text: str) -> None:
        if self.pending is not None:
            self.pending.append(text)
        else:
            await self.conn.send_text(text)

    def _envelope_packet(self, outbound: Outbound, snapshot: bool) -> str | None:
        """The event packet of an envelope, with the socket's offset after it; None when it was
        sent already (a replay overlapping a live delivery). All but the offset was written once
        for the message (``Outbound``)."""
        positions = self.positions
        current = positions.get(outbound.channel)
        if current is not None and current[0] == outbound.epoch:
            if outbound.offset <= current[1]:
                if not snapshot:
                    return None
            else:
                positions[outbound.channel] = outbound.position
        else:
            positions[outbound.channel] = outbound.position
        return outbound.head + encode_cursor(positions) + '"]'

    def _cursor(self) -> str:
        return encode_cursor(self.positions)


class Outbound:
    """One v1 frame from the hub or the session, as the binding sends it: parsed once per message.

    The hub hands the same text object to every recipient of a message one after the other,
    so the last one is kept (``_outbound``): its fields, and for an envelope the event packet
    around where each socket's offset goes, are worked out once, not once per socket (read only).
    """

    __slots__ = ("text", "fields", "channel", "epoch", "offset", "position", "snapshot", "head")

    def __init__(self, text: str) -> None:
        self.text = text
        self.fields: dict = orjson.loads(text)
        fields = self.fields
        channel = fields.get("channel")
        # An envelope: a channel message with its position (a reply to a command names its channel too).
        if channel is None or "offset" not in fields or "reply_to" in fields:
            self.channel: str | None = None
            return
        self.channel = channel
        self.epoch: str = fields.get("epoch")
        self.offset: int = fields["offset"]
        self.position = (self.epoch, self.offset)  # shared by every socket's positions
        self.snapshot = bool(fields.get("snapshot"))
        # ``2[<name>,<envelope>,"<offset>"]``: the name (escaped where it needs it) and the envelope
        # as they came, the offset string (base64url, nothing to escape) in between per socket.
        kind = fields.get("type")
        name = f'"{kind}"' if isinstance(kind, str) and _PLAIN_NAME(kind) else dumps(kind)
        self.head = f'2[{name},{text},"'


# Event names that need no JSON escaping (every built-in type), written as they are.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:\-]+").fullmatch
_last: list = [None, None]  # the last frame text seen and its Outbound


def _outbound(text: str) -> Outbound:
    if _last[0] is text:
        return _last[1]
    outbound = Outbound(text)
    _last[0], _last[1] = text, outbound
    return outbound


async def _nothing() -> None:
    """What ``_send`` returns for a frame that sends nothing."""


def _origin_allowed(scope: dict) -> bool:
    return auth.origin_allowed(scope)


def make_engine(*, namespaces: dict | None = None) -> Engine:
    """The ``/socket.io/`` server of the service: the Renum binding on the main namespace."""
    spaces = namespaces or {"/": RenumSocket}
    connect_timeout = setting("SOCKETIO_CONNECT_TIMEOUT_S")

    def make_handler(socket: EngineSocket) -> Connection:
        return Connection(socket, spaces, connect_timeout=connect_timeout)

    return Engine(make_handler, ping_interval=setting("SOCKETIO_PING_INTERVAL_S"),
                  ping_timeout=setting("SOCKETIO_PING_TIMEOUT_S"), max_payload=setting("SOCKETIO_MAX_PAYLOAD"),
                  allow=_origin_allowed, cors=cors_headers)
