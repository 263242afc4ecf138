"""The channel stream over plain HTTP: multiplexed long polling and server-sent events.

For networks that block WebSockets (docs/protocol.md, "Transports over plain HTTP"). These
are small ASGI handlers mounted in front of Django (``http_router``), not Django views: an
async Django view still runs the sync middleware through a per-request thread, and the
thread lives as long as the request, so a crowd of waiting polls would be a crowd of threads.

A poll or a stream registers a ``Listener`` with the process's hub, like a socket does: the
hub's fan-out wakes it with the message, so a waiter holds no thread, no database connection
and no Redis connection. History is read once, to catch up (``realtime.core.recovery``), and
authentication costs at most one short query (``realtime.core.users``' batched lookup, or the
session row through Django's pool, released at once).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
from django.conf import settings
from redis.exceptions import RedisError

from realtime.conf import setting
from realtime.core import auth
from realtime.core.channels import ChannelPolicy, authorize_subscribe, policy_for
from realtime.core.recovery import CatchUp, catch_up_many
from realtime.fanout.hub import Hub, get_hub
from realtime.ops import metrics
from realtime.schemas import ProtocolError, validate_channel_name

logger = logging.getLogger("realtime.transports.http")

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]

_WAITERS = metrics.HTTP_WAITERS
MAX_TIMEOUT_S = 30
DEFAULT_TIMEOUT_S = 25
MAX_BODY_BYTES = 64 * 1024
_EPOCH_MARK = ',"epoch":"'


class HttpError(Exception):
    """An error answered with a status and a JSON body ``{"detail": ...}`` (or ``body``)."""

    def __init__(self, status: int, detail: str, body: dict | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body = body if body is not None else {"detail": detail}
        self.headers = headers or []


# ---------------------------------------------------------------------- the hub's listener


class Listener:
    """A poll or stream waiting on the hub: what the hub needs of a subscriber, and no more.

    ``held`` is never None, so the hub hands every frame to ``deliver``, which keeps it and
    wakes the waiter. Not registered in the hub's connection table: the socket housekeeping
    (heartbeats, registry) is not for it.
    """

    __slots__ = ("connection_id", "user_key", "held", "outbox", "subscribed", "frames", "waiter", "broken",
                 "queued_bytes")

    def __init__(self, user_key: bytes) -> None:
        self.connection_id = ""
        self.user_key = user_key
        self.held = ()  # not None: deliveries come through ``deliver``
        self.outbox = None
        self.subscribed: set[str] = set()
        self.frames: list[tuple[str, int, str]] = []
        self.waiter: asyncio.Future | None = None
        self.broken = False  # the hub lost history it could not replay: end, let the client resume
        self.queued_bytes = 0

    def deliver(self, channel: str, offset: int, text: str, key: bytes = b"", message: dict | None = None) -> None:
        """Keep a live frame (audience already checked by the hub) and wake the waiter."""
        self.frames.append((channel, offset, text))
        self.queued_bytes += len(text)
        self._wake()

    def close_soon(self, code: int, reason: str) -> None:
        """The hub could not fill a gap: answer now; the client's next request resumes or resyncs."""
        self.broken = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> list[tuple[str, int, str]]:
        """The frames delivered so far, emptied."""
        frames, self.frames, self.queued_bytes = self.frames, [], 0
        return frames

    async def wait(self, timeout: float, gone: asyncio.Future | None) -> None:
        """Until a frame arrives, the client leaves (``gone``), or ``timeout`` seconds pass."""
        if self.frames or self.broken or timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _settle, waiter)
        wake = lambda _: _settle(waiter)  # noqa: E731 - removed again below
        if gone is not None:
            gone.add_done_callback(wake)
        _WAITERS.inc()
        try:
            await waiter
        finally:
            _WAITERS.dec()
            timer.cancel()
            if gone is not None:
                gone.remove_done_callback(wake)
            self.waiter = None


def _settle(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _epoch_of(text: str) -> str:
    """The epoch of an envelope: the first ``,"epoch":"`` is the envelope's own (it follows the
    offset; the type and channel before it are JSON strings, whose quotes would be escaped)."""
    start = text.find(_EPOCH_MARK)
    if start < 0:
        return ""
    start += len(_EPOCH_MARK)
    return text[start:text.find('"', start)]


def _type_of(text: str) -> str:
    """The ``type`` of an envelope, which starts with it (``{"type":"...``)."""
    if text.startswith('{"type":"'):
        end = text.find('"', 9)
        if end > 0 and "\\" not in text[9:end]:
            return text[9:end]
    kind = orjson.loads(text).get("type")
    return kind if isinstance(kind, str) else "message"


# ---------------------------------------------------------------------- per-channel state


@dataclass(slots=True)
class ChannelState:
    """What one reader has of one channel: its position and the envelopes to send after it."""

    channel: str
    epoch: str
    offset: int  # the position once ``messages`` are sent
    recovered: bool
    start: int  # the reader's position before them (its own when recovered, else the channel's)
    messages: list[tuple[int, str]] = field(default_factory=list)
    snapshot: str | None = None

    @classmethod
    def of(cls, caught: CatchUp, since: tuple[str, int] | None) -> ChannelState:
        """The state right after catching up (the replay counts as messages to send)."""
        start = since[1] if caught.recovered and since is not None else caught.offset
        return cls(caught.channel, caught.epoch, caught.offset, caught.recovered, start, list(caught.replay),
                   caught.snapshot)

    def apply(self, offset: int, text: str) -> bool:
        """Take a live frame; True when it changes what the reader must be told.

        A frame of another epoch means the channel restarted (its history was lost): the
        reader cannot recover, and is told so at the new position.
        """
        epoch = _epoch_of(text)
        if epoch and epoch != self.epoch:
            self.epoch, self.offset, self.start, self.recovered = epoch, offset, offset, False
            self.messages, self.snapshot = [], None
            return True
        if offset <= self.offset:
            return False  # covered by the catch-up read
        self.messages.append((offset, text))
        self.offset = offset
        return True


# ---------------------------------------------------------------------- authentication


async def authenticate(scope: dict, query: dict[str, list[str]]) -> auth.Identity:
    """``Authorization: Bearer <access JWT>``, a one-time ``?ticket=``, or the session cookie.

    The first two cost one short user lookup (batched with concurrent ones, on the event
    loop's own connection on PostgreSQL); the session costs the session and user rows through
    Django's connection pool, returned as soon as they are read.
    """
    authorization = auth.header(scope, b"authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise auth.AuthFailure("the Authorization header must be 'Bearer <access token>'")
        user, expires_at = await auth.user_from_token(token.strip())
        return auth.Identity(user, expires_at, "bearer")
    if "ticket" in query:
        user = await auth.redeem_ticket(query["ticket"][0])
        return auth.Identity(user, datetime.now(UTC) + auth.jwt_settings.ACCESS_TOKEN_LIFETIME, "ticket")
    session = await auth.session_user(scope)
    if session is not None:
        user, store = session
        return auth.Identity(user, store.get_expiry_date(), "session")
    raise auth.AuthFailure("missing credentials")


# ---------------------------------------------------------------------- the wait, shared by all


# (user id, channel) -> until when (monotonic) a granted permission is reused. A long poller
# asks again with every request, a few times a second under load: a team membership query
# each time would be most of a poll's cost. Refusals are never remembered.
_granted: dict[tuple[str, str], float] = {}
_GRANTED_MAX = 200_000


async def _authorize(user: Any, channels: list[str]) -> dict[str, ChannelPolicy | ProtocolError]:
    """The channel policy's answer for each channel (``authorize_subscribe``, as the socket asks),
    reusing a grant for ``HTTP_PERMISSION_TTL_S``."""
    ttl = setting("HTTP_PERMISSION_TTL_S")
    user_id = str(user.pk)
    now = time.monotonic()
    results: dict[str, ChannelPolicy | ProtocolError] = {}
    asking = []
    for channel in channels:
        if ttl > 0 and _granted.get((user_id, channel), 0.0) > now:
            results[channel] = policy_for(channel)
        else:
            asking.append(channel)
    checks = await asyncio.gather(*(authorize_subscribe(user, c) for c in asking), return_exceptions=True)
    for channel, outcome in zip(asking, checks, strict=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, ProtocolError):
            raise outcome
        results[channel] = outcome
        if ttl > 0 and isinstance(outcome, ChannelPolicy):
            if len(_granted) >= _GRANTED_MAX:
                _granted.clear()  # a crude bound: the next requests ask again
            _granted[(user_id, channel)] = now + ttl
    return results


async def _join_and_catch_up(hub: Hub, listener: Listener, identity: auth.Identity,
                             positions: dict[str, tuple[str, int] | None],
                             policies: dict[str, ChannelPolicy]) -> dict[str, ChannelState]:
    """Join the hub first, then read: a message published in between is live, not lost."""
    channels = list(policies)
    try:
        await hub.join_many(listener, channels)
    except (RedisError, OSError, TimeoutError) as exc:
        raise HttpError(503, "the message bus is unavailable; retry later", headers=[(b"retry-after", b"2")]) from exc
    listener.subscribed.update(channels)
    try:
        caught = await catch_up_many(policies, identity.user, listener.user_key, positions)
    except RedisError as exc:
        raise HttpError(503, "the message bus is unavailable; retry later", headers=[(b"retry-after", b"2")]) from exc
    states = {}
    for one in caught:
        hub.note_position(one.channel, one.epoch, one.offset)
        states[one.channel] = ChannelState.of(one, positions[one.channel])
    return states


def _apply(states: dict[str, ChannelState], frames: list[tuple[str, int, str]]) -> bool:
    changed = False
    for channel, offset, text in frames:
        state = states.get(channel)
        if state is not None and state.apply(offset, text):
            changed = True
    return changed


class _Keeper:
    """Holds a process's subscription to a channel for ``LINGER_S`` after its last HTTP reader left.

    A long poller leaves its channels with every answer and joins them again a moment later:
    without this, each cycle would UNSUBSCRIBE its ``user:`` channel from Redis and wait for a
    new SUBSCRIBE to be confirmed. Frames it gets are dropped; it is the hub's subscriber only.
    """

    __slots__ = ("connection_id", "user_key", "held", "outbox", "subscribed", "until", "sweeper")

    def __init__(self) -> None:
        self.connection_id = ""
        self.user_key = b""
        self.held = ()
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


def _leave(hub: Hub, listener: Listener) -> None:
    """Take a listener off its channels; a channel left with no reader lingers (``_Keeper``)."""
    listener.waiter = None
    keeper = _keeper_of(hub)
    until = time.monotonic() + LINGER_S
    for channel in listener.subscribed:
        subs = hub.channels.get(channel)
        if subs is None:
            continue
        subs.pop(listener, None)
        if not subs or keeper in subs:
            subs[keeper] = None
            keeper.subscribed.add(channel)
            keeper.until[channel] = until
    listener.subscribed.clear()


async def poll(identity: auth.Identity, positions: dict[str, tuple[str, int] | None], timeout: float,
               gone: asyncio.Future | None, errors: dict[str, ProtocolError]) -> dict[str, ChannelState]:
    """Catch up on every allowed channel, then wait up to ``timeout`` for the first new message.

    Answers at once when there is anything to tell: messages after a position, a channel that
    cannot be recovered, or a channel asked for without a position (its position is news).
    """
    checked = await _authorize(identity.user, list(positions))
    policies = {c: p for c, p in checked.items() if isinstance(p, ChannelPolicy)}
    errors.update({c: e for c, e in checked.items() if isinstance(e, ProtocolError)})
    if not policies:
        return {}
    hub = await get_hub()
    listener = Listener(identity.user_id.encode())
    try:
        states = await _join_and_catch_up(hub, listener, identity, positions, policies)
        _apply(states, listener.take())
        news = any(s.messages or not s.recovered or s.snapshot for s in states.values())
        if not news:
            await listener.wait(jittered(timeout), gone)
            _apply(states, listener.take())
        return states
    finally:
        _leave(hub, listener)


# An empty poll ends somewhere in the last TIMEOUT_JITTER of its timeout (the protocol's
# "waiting up to timeout seconds"): clients that fell back together (a proxy that blocks
# upgrades, a deploy) would otherwise come back together every timeout, as one herd.
TIMEOUT_JITTER = 0.2


def jittered(timeout: float) -> float:
    """A poll's wait: ``timeout`` less up to ``TIMEOUT_JITTER`` of it, at random."""
    return timeout * (1.0 - TIMEOUT_JITTER * random.random())


# ---------------------------------------------------------------------- HTTP plumbing


def _json_headers(extra: list[tuple[bytes, bytes]] | None = None) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"cache-control", b"no-store"), *(extra or [])]


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A complete JSON response."""
    await send({"type": "http.response.start", "status": status,
                "headers": [*_json_headers(headers), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client left")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the body is limited to {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _query(scope: dict) -> dict[str, list[str]]:
    raw = scope.get("query_string", b"")
    return parse_qs(raw.decode("latin-1"), keep_blank_values=True) if raw else {}


async def _identity_or_401(scope: dict, query: dict[str, list[str]]) -> auth.Identity:
    try:
        return await auth_with_busy_database(scope, query)
    except auth.AuthFailure as failure:
        metrics.AUTH_FAILURES.inc()
        raise HttpError(401, str(failure), headers=[(b"www-authenticate", b'Bearer realm="api"')]) from None


async def auth_with_busy_database(scope: dict, query: dict[str, list[str]]) -> auth.Identity:
    """``authenticate``, with a database at its connection ceiling answered by 503 (never 500)."""
    from realtime.ops.middleware import is_pool_exhausted

    try:
        return await authenticate(scope, query)
    except Exception as exc:
        if is_pool_exhausted(exc):
            raise HttpError(503, "the database is busy; retry shortly", headers=[(b"retry-after", b"1")]) from exc
        raise


def _timeout(raw: Any) -> float:
    if raw is None:
        return DEFAULT_TIMEOUT_S
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= raw <= MAX_TIMEOUT_S:
        raise HttpError(400, f"timeout must be a number of seconds from 0 to {MAX_TIMEOUT_S}")
    return float(raw)


def _position(raw: Any) -> tuple[str, int] | None:
    if raw is None:
        return None
    if (not isinstance(raw, dict) or set(raw) != {"epoch", "offset"} or not isinstance(raw["epoch"], str)
            or isinstance(raw["offset"], bool) or not isinstance(raw["offset"], int) or raw["offset"] < 0):
        raise ProtocolError("invalid_message", 'a position is null or {"epoch": "<string>", "offset": <integer >= 0>}')
    return raw["epoch"], raw["offset"]


def _gone_watch(receive: Receive) -> asyncio.Future:
    """A task that ends when the client disconnects (the request body was read already)."""

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return asyncio.ensure_future(watch())


def _error_json(error: ProtocolError) -> dict:
    return {"error": {"code": error.code, "message": error.message}}


# ---------------------------------------------------------------------- POST /api/realtime/poll/


async def poll_endpoint(scope: dict, receive: Receive, send: Send) -> None:
    """``POST /api/realtime/poll/``: every channel of a client in one long poll."""
    if scope["method"] != "POST":
        raise HttpError(405, "use POST", headers=[(b"allow", b"POST")])
    content_type = (auth.header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        # Also what keeps a cross-site form from polling with a session cookie.
        raise HttpError(415, "the body must be JSON (Content-Type: application/json)")
    body = await read_body(receive)
    identity = await _identity_or_401(scope, _query(scope))
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"invalid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("channels"), dict) or not request["channels"]:
        raise HttpError(400, 'the body is {"channels": {"<channel>": null | {"epoch", "offset"}, ...}, "timeout": s}')
    if set(request) - {"channels", "timeout"}:
        raise HttpError(400, f"unknown fields: {', '.join(sorted(set(request) - {'channels', 'timeout'}))}")
    limit = setting("MAX_CHANNELS_PER_CONNECTION")
    if len(request["channels"]) > limit:
        raise HttpError(400, f"at most {limit} channels per poll")
    timeout = _timeout(request.get("timeout"))
    errors: dict[str, ProtocolError] = {}
    positions: dict[str, tuple[str, int] | None] = {}
    for channel, raw in request["channels"].items():
        try:
            validate_channel_name(channel)
            positions[channel] = _position(raw)
        except ProtocolError as error:
            errors[channel] = error
    gone = _gone_watch(receive)
    try:
        states = await poll(identity, positions, timeout, gone, errors)
    finally:
        gone.cancel()
    answer: dict[str, Any] = {}
    for channel in request["channels"]:
        if channel in errors:
            answer[channel] = _error_json(errors[channel])
        else:
            state = states[channel]
            messages = ([state.snapshot] if state.snapshot else []) + [text for _, text in state.messages]
            answer[channel] = {"epoch": state.epoch, "offset": state.offset, "recovered": state.recovered,
                               "messages": [orjson.Fragment(m) for m in messages]}
    # A poll that waited may be followed at once; one that could not wait (timeout 0) and
    # found nothing asks the client to pause, as the v1 endpoint does.
    news = any(s.messages or s.snapshot or not s.recovered for s in states.values())
    await respond(send, 200, orjson.dumps({"channels": answer}),
                  [(b"x-poll-interval", b"0" if news or timeout > 0 else b"1")])


# ---------------------------------------------------------------------- GET /api/realtime/events/


def parse_since(raw: str | None) -> tuple[str, int] | None:
    """Parse ``<epoch>:<offset>``; None when absent; ValueError when malformed."""
    if not raw:
        return None
    epoch, sep, offset = raw.rpartition(":")
    if not sep or not epoch or not (offset.isascii() and offset.isdigit()):
        raise ValueError("since must be <epoch>:<offset>")
    return epoch, int(offset)


async def events_endpoint(scope: dict, receive: Receive, send: Send) -> None:
    """``GET /api/realtime/events/?channel=&since=&timeout=``: one channel (v1), on the same wait.

    Without ``since`` it answers at once with the channel's position, as it always did.
    """
    if scope["method"] != "GET":
        raise HttpError(405, "use GET", headers=[(b"allow", b"GET")])
    query = _query(scope)
    identity = await _identity_or_401(scope, query)
    channel = query.get("channel", [""])[0]
    try:
        validate_channel_name(channel)
    except ProtocolError as exc:
        raise HttpError(400, exc.message, body={"channel": [exc.message]}) from None
    try:
        since = parse_since(query.get("since", [None])[0])
        timeout = min(MAX_TIMEOUT_S, max(0, int(query.get("timeout", [str(DEFAULT_TIMEOUT_S)])[0])))
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    errors: dict[str, ProtocolError] = {}
    gone = _gone_watch(receive)
    try:
        states = await poll(identity, {channel: since}, timeout if since else 0, gone, errors)
    finally:
        gone.cancel()
    if channel in errors:
        error = errors[channel]
        status = 404 if error.code == "not_found" else 403
        detail = error.message if status == 404 else f"not allowed to read {channel}"
        raise HttpError(status, detail)
    state = states[channel]
    messages = ([state.snapshot] if state.snapshot else []) + [text for _, text in state.messages]
    body = {"channel": channel, "epoch": state.epoch, "offset": state.offset, "recovered": state.recovered,
            "messages": [orjson.Fragment(m) for m in messages]}
    await respond(send, 200, orjson.dumps(body), [(b"x-poll-interval", b"0" if messages else b"1")])


# ---------------------------------------------------------------------- GET /api/realtime/sse/


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def encode_cursor(positions: dict[str, tuple[str, int]]) -> str:
    """The opaque cursor of a stream: every channel's position, base64url JSON (unpadded).

    ``base64.urlsafe_b64encode`` spelt out: a Socket.IO socket writes one with every delivery.
    """
    return binascii.b2a_base64(orjson.dumps(positions), newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> dict[str, tuple[str, int]]:
    """The positions a cursor stands for; ValueError when it is not one of ours."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise ValueError("the cursor is not one this server issued") from None
    if not isinstance(raw, dict):
        raise ValueError("the cursor is not one this server issued")
    positions = {}
    for channel, value in raw.items():
        if (not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], str)
                or isinstance(value[1], bool) or not isinstance(value[1], int) or value[1] < 0):
            raise ValueError("the cursor is not one this server issued")
        positions[channel] = (value[0], value[1])
    return positions


def _event(kind: str, data: str, cursor: str | None = None) -> bytes:
    return (f"event: {kind}\ndata: {data}\n" + (f"id: {cursor}\n" if cursor is not None else "") + "\n").encode()


async def sse_endpoint(scope: dict, receive: Receive, send: Send) -> None:
    """``GET /api/realtime/sse/?channel=...``: the channels as server-sent events, resumable by cursor."""
    if scope["method"] != "GET":
        raise HttpError(405, "use GET", headers=[(b"allow", b"GET")])
    query = _query(scope)
    channels = list(dict.fromkeys(query.get("channel", [])))
    if not channels:
        raise HttpError(400, "name at least one channel: ?channel=<name>")
    limit = setting("MAX_CHANNELS_PER_CONNECTION")
    if len(channels) > limit:
        raise HttpError(400, f"at most {limit} channels per stream")
    cursor = auth.header(scope, b"last-event-id") or query.get("since", [""])[0]
    try:
        resume = decode_cursor(cursor) if cursor else {}
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    identity = await _identity_or_401(scope, query)
    errors: dict[str, ProtocolError] = {}
    for channel in channels:
        try:
            validate_channel_name(channel)
        except ProtocolError as error:
            errors[channel] = error
    checked = await _authorize(identity.user, [c for c in channels if c not in errors])
    policies = {c: p for c, p in checked.items() if isinstance(p, ChannelPolicy)}
    errors.update({c: e for c, e in checked.items() if isinstance(e, ProtocolError)})
    if not policies:
        first = next(iter(errors.values()))
        raise HttpError(404 if first.code == "not_found" else 403 if first.code == "forbidden" else 400,
                        "no channel of this stream can be read",
                        body={"detail": "no channel of this stream can be read",
                              "channels": {c: _error_json(e)["error"] for c, e in errors.items()}})
    hub = await get_hub()
    listener = Listener(identity.user_id.encode())
    gone = _gone_watch(receive)
    try:
        states = await _join_and_catch_up(hub, listener, identity, {c: resume.get(c) for c in policies}, policies)
        await _stream(send, listener, identity, states, errors, gone, set(resume))
    finally:
        gone.cancel()
        _leave(hub, listener)


async def _stream(send: Send, listener: Listener, identity: auth.Identity, states: dict[str, ChannelState],
                  errors: dict[str, ProtocolError], gone: asyncio.Future, resumed: set[str]) -> None:
    heartbeat = setting("HEARTBEAT_S")
    outbox_limit = setting("OUTBOX_MAX_BYTES")
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
        (b"x-accel-buffering", b"no")]})
    # The snapshots and replays follow ``ready``, whose cursor is the position before them;
    # each replayed event's cursor moves its channel past it, so a drop mid-replay resumes there.
    cursor = {c: (s.epoch, s.start) for c, s in states.items()}
    opening = [_event("ready", orjson.dumps({
        "channels": {c: {"epoch": s.epoch, "offset": s.start, "recovered": s.recovered} for c, s in states.items()},
        "heartbeat_s": heartbeat,
    }).decode(), encode_cursor(cursor))]
    for channel, error in errors.items():
        refusal = {"channel": channel, "code": error.code, "message": error.message}
        opening.append(_event("channel_error", orjson.dumps(refusal).decode()))
    for channel, state in states.items():
        if not state.recovered and channel in resumed:  # a channel new to the stream has nothing to resync
            opening.append(_event("resync", orjson.dumps(
                {"channel": channel, "epoch": state.epoch, "offset": state.offset}).decode()))
    for channel, state in states.items():
        if state.snapshot:
            opening.append(_event(_type_of(state.snapshot), state.snapshot, encode_cursor(cursor)))
        for offset, text in state.messages:
            cursor[channel] = (state.epoch, offset)
            opening.append(_event(_type_of(text), text, encode_cursor(cursor)))
        cursor[channel] = (state.epoch, state.offset)  # past what the audience rule kept out, too
        state.messages, state.snapshot = [], None
    await send({"type": "http.response.body", "body": b"".join(opening), "more_body": True})
    expires_at = identity.expires_at
    while not gone.done() and not listener.broken:
        remaining = (expires_at - datetime.now(UTC)).total_seconds() if expires_at is not None else None
        if remaining is not None and remaining <= 0:
            break  # the credentials ran out: the client reconnects with fresh ones and resumes
        if not listener.frames:
            await listener.wait(min(heartbeat, remaining) if remaining is not None else heartbeat, gone)
        if listener.queued_bytes > outbox_limit:
            break  # a slow reader: it resumes from its cursor instead of growing this buffer
        chunks = []
        for channel, offset, text in listener.take():
            state = states[channel]
            was_epoch = state.epoch
            if not state.apply(offset, text):
                continue
            state.messages.clear()
            cursor[channel] = (state.epoch, state.offset)
            if state.epoch != was_epoch:
                resync = {"channel": channel, "epoch": state.epoch, "offset": state.offset}
                chunks.append(_event("resync", orjson.dumps(resync).decode(), encode_cursor(cursor)))
            else:
                chunks.append(_event(_type_of(text), text, encode_cursor(cursor)))
        if not chunks:
            chunks.append(b": ping\n\n")
        await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
    if not gone.done():
        await send({"type": "http.response.body", "body": b"", "more_body": False})


# ---------------------------------------------------------------------- routing


ROUTES: dict[str, Callable[[dict, Receive, Send], Awaitable[None]]] = {
    "/api/realtime/poll/": poll_endpoint,
    "/api/realtime/sse/": sse_endpoint,
    "/api/realtime/events/": events_endpoint,
}


async def _serve(handler: Callable[[dict, Receive, Send], Awaitable[None]], scope: dict, receive: Receive,
                 send: Send) -> None:
    started = False

    async def tracked(message: dict) -> None:
        nonlocal started
        started = True
        await send(message)

    try:
        await handler(scope, receive, tracked)
    except HttpError as error:
        if error.status >= 500:
            logger.warning("%s %s: %s (%r)", scope.get("method"), scope.get("path"), error, error.__cause__)
        if not started:
            await respond(send, error.status, orjson.dumps(error.body), error.headers)
    except ConnectionError:
        pass  # the client left before its answer
    except Exception:
        logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
        if not started:
            await respond(send, 500, b'{"detail":"internal error"}')


def cors_headers(scope: dict) -> list[tuple[bytes, bytes]]:
    """The CORS headers of a transport's answer, from the settings django-cors-headers reads.

    The transports are served before Django, so its CORS middleware never sees their answers;
    their preflights (OPTIONS) go to Django, where it answers them. Credentials are bearer
    tokens or tickets, never cookies across origins, so no ``Allow-Credentials``.
    """
    origin = next((value for name, value in scope.get("headers", ()) if name == b"origin"), None)
    if origin is None:
        return []
    allowed = getattr(settings, "CORS_ALLOW_ALL_ORIGINS", False) or \
        origin.decode("latin-1") in getattr(settings, "CORS_ALLOWED_ORIGINS", ())
    if not allowed:
        return [(b"vary", b"origin")]
    return [(b"access-control-allow-origin", origin), (b"vary", b"origin"),
            (b"access-control-expose-headers", ", ".join(getattr(settings, "CORS_EXPOSE_HEADERS", ())).encode())]


def http_router(django_app: Any) -> Callable[[dict, Receive, Send], Awaitable[None]]:
    """An ASGI app serving the HTTP transports by exact path and everything else with Django."""

    async def app(scope: dict, receive: Receive, send: Send) -> None:
        handler = ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if handler is None or scope.get("method") == "OPTIONS":  # preflights: Django's CORS middleware
            return await django_app(scope, receive, send)
        extra = cors_headers(scope)
        if not extra:
            return await _serve(handler, scope, receive, send)

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return await _serve(handler, scope, receive, send_with_cors)

    return app
