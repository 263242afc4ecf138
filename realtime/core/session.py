"""The session core: one client's session of the Renum realtime protocol, whatever carries it.

A session holds what the protocol knows of a client: its authentication result, the
channels it follows and where they stand, its limits (command rate, invalid frames, channels
per connection), and the answers to its commands (subscribe with recovery, unsubscribe,
publish, command, auth refresh, ping). It knows nothing of ASGI: the transport that carries
it (the v1 WebSocket consumer, ``realtime.transports.consumers``; the Socket.IO binding) hands it the
client's frames and gives it an ``Outbox`` to write to and a way to close (``Transport``).

The HTTP transports (``realtime.transports.http``: long polls, server-sent events) carry a
``RequestSession``: a session that lives as long as one request and follows the channels the
request names, through the same ``follow`` (permissions, the channel limit, joining before
reading, recovery) and the same outbox as a socket's ``subscribe``.

The process's node (``realtime.fanout.node``) holds the session in its hub, which writes channel
messages to the session's outbox as already serialized frames, and routes the user's
control messages (server-side subscribe, unsubscribe, disconnect) to ``control``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.exceptions import RedisError

from realtime.conf import setting
from realtime.core import auth, security, sessions
from realtime.core.channels import BROADCAST, ChannelPolicy, authorize_subscribe, call_check, policy_for, user_channel
from realtime.core.commands import run_command
from realtime.core.limits import TokenBucket
from realtime.core.recovery import CatchUp, catch_up, catch_up_many
from realtime.fanout.hub import Hub, Outbox
from realtime.fanout.node import Node, get_node
from realtime.ops import metrics
from realtime.publish import apublish
from realtime.schemas import (
    AuthRefresh,
    AuthRefreshed,
    ChannelPosition,
    Command,
    ControlDisconnect,
    ControlSubscribe,
    ControlUnsubscribe,
    ErrorPayload,
    Ping,
    ProtocolError,
    Publish,
    PublishedFrame,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    frame,
    parse_command,
    parse_control_message,
    validate_channel_name,
    wire_time_or_none,
)

logger = logging.getLogger("realtime.core.session")

_CONNECTS_OK = metrics.CONNECTS.labels("ok")


class Transport(Protocol):
    """What a session needs of the connection that carries it."""

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the connection with a protocol close code."""

    def describe(self) -> tuple[str, str]:
        """The client's user agent and the ``client_id`` it named, for the registry."""


class Session:
    """One authenticated client session: followed channels, limits, commands, recovery.

    Inputs (frames through ``receive``, control messages through ``control``) are handled
    one at a time, under the transport's ``turn`` lock.
    """

    __slots__ = ("transport", "turn", "connection_id", "identity", "session_key", "ip", "user_key", "node",
                 "outbox", "held", "subscribed", "closing", "counted", "last_seen", "connected_at",
                 "invalid_frames", "rate_strikes", "bucket")

    def __init__(self, transport: Transport, identity: auth.Identity, *, connection_id: str, ip: str,
                 session_key: str | None, send: Callable[[dict], Awaitable[None]], turn: asyncio.Lock,
                 connected_at: float) -> None:
        self.transport = transport
        self.turn = turn
        self.connection_id = connection_id
        self.identity: auth.Identity | None = identity  # None once the session ended
        self.session_key = session_key  # of a session-cookie socket (``realtime.core.sessions``)
        self.ip = ip
        self.user_key = identity.user_id.encode()
        self.node: Node | None = None  # set by ``start``
        self.outbox = Outbox(send, setting("OUTBOX_MAX_BYTES"), self._on_slow)
        # Frames held while a welcome or recovery is being sent; None: deliver at once.
        self.held: list[tuple[str, int, str, bytes]] | None = []
        self.subscribed: set[str] = set()
        self.closing = False
        self.counted = False
        self.last_seen = time.monotonic()
        self.connected_at = connected_at
        self.invalid_frames = 0
        self.rate_strikes = 0
        self.bucket = TokenBucket(setting("COMMAND_RATE"), setting("COMMAND_BURST"))

    # ------------------------------------------------------------------ start and end

    async def start(self) -> None:
        """Join the node (the user's channel and ``broadcast``, control routing, registry) and
        send the welcome; a user over MAX_CONNECTIONS_PER_USER is closed with 4003 instead.
        On failure the session has left the node again."""
        identity = self.identity
        self.node = await get_node()
        own = (user_channel(identity.user_id), BROADCAST)
        self.subscribed.update(own)  # listed in the registry entry from the start
        try:
            # Deliveries are held until the welcome is out.
            count, reads = await self.node.attach(self, self.registry_entry(), own)
        except BaseException:
            self.identity = None
            await self.node.detach(self, identity.user_id)
            raise
        if count > setting("MAX_CONNECTIONS_PER_USER"):
            self.identity = None
            await self.node.detach(self, identity.user_id)
            metrics.CONNECTS.labels("too_many").inc()
            await security.record("too_many_connections", ip=self.ip, user_id=identity.user_id)
            await self.transport.close(code=4003, reason="too many connections for this user")
            return
        _CONNECTS_OK.inc()
        metrics.CONNECTIONS.inc()
        self.counted = True
        positions = dict(zip(own, reads, strict=True))
        hub = self.node.hub
        for channel, position in positions.items():
            hub.note_position(channel, position.epoch, position.offset)
        self.outbox.push(frame("welcome", Welcome(
            user_id=identity.user_id,
            connection_id=self.connection_id,
            expires_at=wire_time_or_none(identity.expires_at),
            heartbeat_s=setting("HEARTBEAT_S"),
            channels={c: ChannelPosition(p.epoch, p.offset) for c, p in positions.items()},
        )))
        self.release({c: p.offset for c, p in positions.items()})

    async def end(self) -> None:
        """End the session: refuse further frames, leave hub, control group and registry (idempotent)."""
        self.outbox.close()
        if self.identity is None:
            return
        self.identity, identity = None, self.identity
        if self.counted:
            self.counted = False
            metrics.CONNECTIONS.dec()
        if self.node is None:  # ended before it joined the node
            return
        try:
            await self.node.detach(self, identity.user_id)
        except Exception:
            logger.exception("cleanup of connection %s failed", self.connection_id)

    def registry_entry(self) -> dict[str, Any]:
        """This session's entry in the connection registry (``realtime.storage.registry``)."""
        user_agent, client_id = self.transport.describe()
        return {
            "connection_id": self.connection_id,
            "user_id": self.identity.user_id,
            "username": self.identity.user.get_username(),
            "ip": self.ip,
            "user_agent": user_agent,
            "client_id": client_id,
            "auth": self.identity.method,
            "connected_at": self.connected_at,
            "last_activity": time.time() - (time.monotonic() - self.last_seen),
            "channels": sorted(self.subscribed),
            # Where control messages for this session go: its process's channel (realtime.fanout.control).
            "channel_name": self.node.control_channel,
        }

    # ------------------------------------------------------------------ delivery (called by the hub)

    def deliver(self, channel: str, offset: int, text: str, key: bytes = b"", message: dict | None = None) -> None:
        """Send a channel message, or hold it while a welcome or recovery is being sent."""
        if self.held is None:
            self.outbox.push(text, key, message)
        else:
            self.held.append((channel, offset, text, key))

    def release(self, sent_up_to: dict[str, int]) -> None:
        """Flush held messages, skipping those already covered by the replay or position sent."""
        held, self.held = self.held or [], None
        for channel, offset, text, key in held:
            if offset > sent_up_to.get(channel, -1):
                self.outbox.push(text, key)

    def _on_slow(self) -> None:
        metrics.SLOW_CONSUMERS.inc()
        self.close_soon(4009, "slow consumer: reconnect and resume")

    def close_soon(self, code: int, reason: str) -> None:
        """Close the session's connection from synchronous code (hub, housekeeping)."""
        if not self.closing:
            self.closing = True
            asyncio.ensure_future(self.transport.close(code=code, reason=reason))

    # ------------------------------------------------------------------ inbound frames

    async def receive(self, raw: str | bytes) -> None:
        """Handle one client frame; every bad frame gets an ``error`` and the session goes on."""
        # Frames that arrive after a policy close (4008, 4029) was decided are not handled:
        # no second security event, no second close.
        if self.identity is None or self.closing:
            return
        self.last_seen = time.monotonic()
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
                    await self.transport.close(
                        code=4029, reason=f"rate limited; retry after {setting('RATE_LIMIT_RETRY_S')}s")
                    return
                raise ProtocolError("rate_limited", f"slow down: retry in {self.bucket.seconds_until_token():.2f}s")
            self.rate_strikes = 0
            command = parse_command(raw)
            try:
                await self.execute(command)
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
            self.outbox.push(frame("error", ErrorPayload(error.code, error.message), error.reply_to))
            if self.invalid_frames > setting("MAX_INVALID_FRAMES"):
                self.closing = True
                await security.record("invalid_frames", ip=self.ip, user_id=self.identity.user_id)
                await self.transport.close(code=4008, reason="too many invalid or oversized messages")
        except Exception:
            # A bug or a failed dependency in a handler: logged with the connection, answered,
            # and the session goes on (its state was not changed by the failed command).
            logger.exception("connection %s: a frame failed", self.connection_id)
            metrics.PROTOCOL_ERRORS.labels("internal").inc()
            self.outbox.push(frame("error", ErrorPayload("internal", "internal error; see the server log"),
                                   getattr(command, "id", None)))

    async def execute(self, command: Any) -> None:
        """Answer one parsed client command (``realtime.schemas``); refusals raise ``ProtocolError``
        with the command's id to reply to."""
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
        outcome = (await self.follow({channel: (since.epoch, since.offset) if since is not None else None},
                                     checked=checked))[channel]
        if isinstance(outcome, ProtocolError):
            raise outcome
        caught = outcome
        # `replayed` tells the client how many of the frames that follow are the replay, so it
        # knows when its position may move past them (an extension of the v1 reply).
        self.outbox.push(frame("subscribed", Subscribed(
            channel=channel, epoch=caught.epoch, offset=caught.offset, recovered=caught.recovered,
            replayed=len(caught.replay),
        ), reply_to))
        for _, text in caught.replay:
            self.outbox.push(text)  # never coalesced: the client counts these frames
        if caught.snapshot is not None:
            self.outbox.push(caught.snapshot)
        self.release({channel: caught.offset})

    # ------------------------------------------------------------------ following channels

    async def follow(self, positions: dict[str, tuple[str, int] | None], *,
                     checked: bool = False) -> dict[str, CatchUp | ProtocolError]:
        """Start following channels from the positions (epoch, offset) a client has, or from now
        (None): what a socket's ``subscribe`` and an HTTP request's channels have in common.

        Each channel's permission is asked (``authorize``; ``checked``: the server decided, only
        the name is checked), then the channel limit; the allowed channels are joined in the hub
        *before* their history is read (one read for all of them), so that nothing published in
        between is missed, and each is answered with its ``CatchUp``, a refused one with its
        ``ProtocolError``. From here live frames are held until ``release``, so that the caller
        sends what the catch-up found first. A failure of the hub or of Redis raises.
        """
        answers: dict[str, Any] = _trusted(list(positions)) if checked else await self.authorize(list(positions))
        limit = setting("MAX_CHANNELS_PER_CONNECTION")
        count = len(self.subscribed)
        joining = []
        for channel, answer in answers.items():
            if isinstance(answer, ProtocolError) or channel in self.subscribed:
                continue
            if count >= limit:
                answers[channel] = ProtocolError("limit_exceeded", "too many channels on this connection")
                continue
            count += 1
            joining.append(channel)
        policies = {c: p for c, p in answers.items() if isinstance(p, ChannelPolicy)}
        if not policies:
            return answers
        if self.node is None:  # a request session reaches the node here, not in ``start``
            self.node = await get_node()
        self.held = self.held if self.held is not None else []
        hub = self.node.hub
        try:
            if joining:
                await hub.join_many(self, joining)
                self.subscribed.update(joining)
            if len(policies) == 1:
                [(channel, policy)] = policies.items()
                caught = [await catch_up(policy, self.identity.user, self.user_key, channel, positions[channel])]
            else:
                caught = await catch_up_many(policies, self.identity.user, self.user_key, positions)
        except BaseException:
            self.release({})
            raise
        for one in caught:
            hub.note_position(one.channel, one.epoch, one.offset)
            answers[one.channel] = one
        return answers

    async def authorize(self, channels: list[str]) -> dict[str, ChannelPolicy | ProtocolError]:
        """Each channel's policy where this session's user may read it, else the refusal
        (``authorize_subscribe``: ``invalid_message``, ``not_found`` or ``forbidden``)."""
        user = self.identity.user
        if len(channels) == 1:  # a socket's subscribe: no task for one check
            try:
                return {channels[0]: await authorize_subscribe(user, channels[0])}
            except ProtocolError as error:
                return {channels[0]: error}
        checks = await asyncio.gather(*(authorize_subscribe(user, c) for c in channels), return_exceptions=True)
        for outcome in checks:
            if isinstance(outcome, BaseException) and not isinstance(outcome, ProtocolError):
                raise outcome
        return dict(zip(channels, checks, strict=True))

    async def _unsubscribe(self, channel: str, reply_to: Any) -> None:
        validate_channel_name(channel)
        if channel not in self.subscribed:
            raise ProtocolError("not_found", f"not subscribed to {channel}")
        self.subscribed.discard(channel)
        await self.node.hub.leave(self, channel)
        self.outbox.push(frame("unsubscribed", Unsubscribed(channel), reply_to))

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
        self.outbox.push(frame("published", PublishedFrame(channel, published.offset, published.epoch), command.id))

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
        self.outbox.push(frame("auth.refreshed", AuthRefreshed(wire_time_or_none(expires_at)), command.id))

    # ------------------------------------------------------------------ control (channel layer)

    def control(self, message: dict) -> None:
        """Handle a control message from the node's control plane, in turn with the client's frames."""
        asyncio.ensure_future(self._handle_control(message))

    async def _handle_control(self, message: dict) -> None:
        async with self.turn:
            if self.identity is None:  # closed meanwhile
                return
            try:
                event = parse_control_message(message)
                await _CONTROL_HANDLERS[type(event)](self, event)
            except Exception:
                logger.exception("control message %s failed", message.get("type"))

    async def rt_subscribe(self, event: ControlSubscribe) -> None:
        """Server-side subscribe of this user's connections (e.g. the user joined a team)."""
        if self.identity is not None and event.channel not in self.subscribed:
            try:
                await self._subscribe(event.channel, None, None, checked=True)
            except ProtocolError as error:
                logger.warning("server-side subscribe to %s failed: %s", event.channel, error.message)

    async def rt_unsubscribe(self, event: ControlUnsubscribe) -> None:
        """Server-side unsubscribe (e.g. the user left a team)."""
        if self.identity is not None and event.channel in self.subscribed:
            await self._unsubscribe(event.channel, None)

    async def rt_disconnect(self, event: ControlDisconnect) -> None:
        """Close this session on the server's request (admin action, deactivated user)."""
        if event.auth is not None and (self.identity is None or self.identity.method != event.auth):
            return  # e.g. a logout closes session-cookie sockets, not the user's token sockets
        if event.session is not None and (self.session_key is None
                                          or sessions.session_tag(self.session_key) != event.session):
            return  # another session of the same user
        if event.connection_id is None or event.connection_id == self.connection_id:
            await self.transport.close(code=event.code, reason=event.reason)


# Control messages (``realtime.schemas``: sent by ``realtime.publish``'s ``*_user_on_commit`` and
# ``realtime.ops.probes``) and their handlers.
_CONTROL_HANDLERS: dict[type, Callable[[Session, Any], Awaitable[None]]] = {
    ControlSubscribe: Session.rt_subscribe,
    ControlUnsubscribe: Session.rt_unsubscribe,
    ControlDisconnect: Session.rt_disconnect,
}


def _trusted(channels: list[str]) -> dict[str, ChannelPolicy | ProtocolError]:
    """The policies of channels the server chose (a server-side subscribe): the name is checked,
    not the user's permission."""
    answers: dict[str, ChannelPolicy | ProtocolError] = {}
    for channel in channels:
        try:
            answers[channel] = policy_for(validate_channel_name(channel))
        except ProtocolError as error:
            answers[channel] = error
    return answers


# ---------------------------------------------------------------------- sessions of one HTTP request


class RequestSession(Session):
    """A session that lasts one HTTP request: a long poll or an event stream (``realtime.transports.http``).

    It follows the channels the request names (``follow``), as a socket's ``subscribe`` does,
    and writes what they carry to its outbox; it takes no client frames. It does not ``start``
    on the node: it has no registry entry and no control routing, is not counted among the
    user's connections and gets no welcome. Two things differ from a socket's session, both
    because a long poller comes back with every answer: a granted permission is reused for
    ``HTTP_PERMISSION_TTL_S``, and the channels it leaves linger in the process's subscription
    (``_Keeper``) for the next request.
    """

    __slots__ = ("expiry",)

    def __init__(self, transport: Transport, identity: auth.Identity, *, ip: str,
                 send: Callable[[dict], Awaitable[None]]) -> None:
        super().__init__(transport, identity, connection_id="", ip=ip, session_key=None, send=send,
                         turn=asyncio.Lock(), connected_at=time.time())
        self.expiry: asyncio.TimerHandle | None = None

    async def authorize(self, channels: list[str]) -> dict[str, ChannelPolicy | ProtocolError]:
        """``Session.authorize``, reusing a grant for ``HTTP_PERMISSION_TTL_S`` (refusals are
        never remembered)."""
        ttl = setting("HTTP_PERMISSION_TTL_S")
        if ttl <= 0:
            return await super().authorize(channels)
        user_id = self.identity.user_id
        now = time.monotonic()
        granted = {c for c in channels if _granted.get((user_id, c), 0.0) > now}
        asking = [c for c in channels if c not in granted]
        asked = await super().authorize(asking) if asking else {}
        for channel, answer in asked.items():
            if isinstance(answer, ChannelPolicy):
                if len(_granted) >= _GRANTED_MAX:
                    _granted.clear()  # a crude bound: the next requests ask again
                _granted[(user_id, channel)] = now + ttl
        return {c: policy_for(c) if c in granted else asked[c] for c in channels}

    def close_when_expired(self) -> None:
        """Close (4011) when the credentials expire, as the node's housekeeping closes a socket
        (a request session is not in the hub's connection table that it sweeps)."""
        expires_at = self.identity.expires_at
        if expires_at is not None:
            delay = max(0.0, (expires_at - datetime.now(UTC)).total_seconds())
            self.expiry = asyncio.get_running_loop().call_later(
                delay, self.close_soon, 4011, "session expired" if self.identity.method == "session"
                else "token expired")

    async def end(self) -> None:
        """Refuse further frames and leave the channels, which linger a while (idempotent)."""
        self.outbox.close()
        # The outbox calls back into the session when it overflows: left so, the two are a
        # reference cycle, freed only by the next garbage collection, and a long poller leaves
        # one behind every few seconds.
        self.outbox.on_overflow = _nothing
        if self.identity is None:
            return
        self.identity = None
        if self.expiry is not None:
            self.expiry.cancel()
        if self.node is not None:
            _linger(self.node.hub, self)


def _nothing() -> None:
    """What an ended request session's outbox reports an overflow to."""


# (user id, channel) -> until when (monotonic) a granted permission is reused. A long poller
# asks again with every request, a few times a second under load: a team membership query
# each time would be most of a poll's cost.
_granted: dict[tuple[str, str], float] = {}
_GRANTED_MAX = 200_000


class _Keeper:
    """Holds a process's subscription to a channel for ``LINGER_S`` after its last request session left.

    A long poller leaves its channels with every answer and joins them again a moment later:
    without this, each cycle would UNSUBSCRIBE its ``user:`` channel from Redis and wait for a
    new SUBSCRIBE to be confirmed. Frames it gets are dropped; it is the hub's subscriber only.
    """

    __slots__ = ("connection_id", "user_key", "held", "outbox", "subscribed", "until", "sweeper")

    def __init__(self) -> None:
        self.connection_id = ""
        self.user_key = b""
        self.held = ()  # not None: the hub hands frames to ``deliver``, which drops them
        self.outbox = None
        self.subscribed: set[str] = set()
        self.until: dict[str, float] = {}
        self.sweeper: asyncio.Task | None = None

    def deliver(self, channel: str, offset: int, text: str, key: bytes = b"", message: dict | None = None) -> None:
        """Nothing to do: the keeper reads nothing."""

    def close_soon(self, code: int, reason: str) -> None:
        """Nothing to close."""

    async def sweep(self, hub: Hub) -> None:
        """Give up the channels whose linger time is over (the hub unsubscribes the unused ones)."""
        while True:
            await asyncio.sleep(LINGER_S / 2)
            now = time.monotonic()
            for channel, until in list(self.until.items()):
                if until <= now:
                    del self.until[channel]
                    self.subscribed.discard(channel)
                    try:
                        await hub.leave(self, channel)
                    except Exception:
                        logger.debug("leaving %s failed", channel, exc_info=True)


LINGER_S = 30.0
_keepers: weakref.WeakKeyDictionary[Hub, _Keeper] = weakref.WeakKeyDictionary()


def _keeper_of(hub: Hub) -> _Keeper:
    keeper = _keepers.get(hub)
    if keeper is None:
        keeper = _keepers[hub] = _Keeper()
        # A fresh context: the sweeper serves every reader, not the request that started it.
        keeper.sweeper = asyncio.get_running_loop().create_task(keeper.sweep(hub), context=contextvars.Context())
    return keeper


def _linger(hub: Hub, session: RequestSession) -> None:
    """Take a request session off its channels; a channel left with no reader lingers (``_Keeper``)."""
    keeper = _keeper_of(hub)
    until = time.monotonic() + LINGER_S
    for channel in session.subscribed:
        subs = hub.channels.get(channel)
        if subs is None:
            continue
        subs.pop(session, None)
        if not subs or keeper in subs:
            subs[keeper] = None
            keeper.subscribed.add(channel)
            keeper.until[channel] = until
    session.subscribed.clear()
