"""The channel stream over plain HTTP: multiplexed long polling and server-sent events.

For networks that block WebSockets (docs/protocol.md, "Transports over plain HTTP"). These
are small ASGI handlers mounted in front of Django (``http_router``), not Django views: an
async Django view still runs the sync middleware through a per-request thread, and the
thread lives as long as the request, so a crowd of waiting polls would be a crowd of threads.

This module is the HTTP codec of the session core, as ``realtime.transports.consumers`` is its WebSocket
transport: each poll or stream carries a session (``realtime.core.session.RequestSession``), which
asks the channels' permissions, applies the channel limit, joins the hub, catches up
(positions, ``recovered``, the replay, snapshots), holds live frames until they may follow,
and writes every frame to its outbox. What is left here is the wire: request parsing and
credentials, the poll's JSON answer, the stream's events and cursors, ``Last-Event-ID``,
timeouts and status codes. A waiter holds no thread, no database connection and no Redis
connection: the hub's fan-out writes the message to its session's outbox, which wakes it.
Authentication costs at most one short query (``realtime.core.users``' batched lookup, or the
session row through Django's pool, released at once).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
from django.conf import settings
from redis.exceptions import RedisError

from realtime.conf import setting
from realtime.core import auth
from realtime.core.recovery import CatchUp
from realtime.core.session import RequestSession
from realtime.ops import metrics
from realtime.schemas import ProtocolError, validate_channel_name

logger = logging.getLogger("realtime.transports.http")

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]

_WAITERS = metrics.HTTP_WAITERS
MAX_TIMEOUT_S = 30
DEFAULT_TIMEOUT_S = 25
MAX_BODY_BYTES = 64 * 1024
_CHANNEL_MARK = ',"channel":"'
_OFFSET_MARK = '","offset":'
_EPOCH_MARK = ',"epoch":"'


class HttpError(Exception):
    """An error answered with a status and a JSON body ``{"detail": ...}`` (or ``body``)."""

    def __init__(self, status: int, detail: str, body: dict | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body = body if body is not None else {"detail": detail}
        self.headers = headers or []


# ---------------------------------------------------------------------- envelopes from the session


def _position_of(text: str) -> tuple[str, int, str]:
    """The channel, offset and epoch of an envelope, which follow its type in that order
    (``realtime.schemas.envelope_parts``, the offset and epoch as Redis inserts them).

    The first ``,"channel":"`` is the envelope's own: the type before it is a JSON string,
    whose quotes would be escaped; channel names need no escaping.
    """
    start = text.index(_CHANNEL_MARK) + len(_CHANNEL_MARK)
    end = text.index(_OFFSET_MARK, start)
    offset_end = text.index(_EPOCH_MARK, end)
    epoch_start = offset_end + len(_EPOCH_MARK)
    epoch = text[epoch_start:text.index('"', epoch_start)]
    return text[start:end], int(text[end + len(_OFFSET_MARK):offset_end]), epoch


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
    """What one reader has of one channel, as the wire reports it: its position and the
    envelopes to send after it."""

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

    def apply(self, offset: int, epoch: str, text: str) -> bool:
        """Take a live envelope; True when it changes what the reader must be told.

        An envelope of another epoch means the channel restarted (its history was lost): the
        reader cannot recover, and is told so at the new position. One at or below the
        position was covered by the catch-up (the hub may deliver it after the read).
        """
        if epoch != self.epoch:
            self.epoch, self.offset, self.start, self.recovered = epoch, offset, offset, False
            self.messages, self.snapshot = [], None
            return True
        if offset <= self.offset:
            return False
        self.messages.append((offset, text))
        self.offset = offset
        return True


# ---------------------------------------------------------------------- the session's side of a request


class _Wire:
    """What a request's session writes to and closes (its ``Transport``), and the request's wait.

    ``ended`` once the session closed it: the hub lost history it could not replay, the
    reader is too slow, or the credentials ran out. The request answers or ends then, and the
    client's next request resumes or resyncs.
    """

    __slots__ = ("waiter", "ended")

    def __init__(self) -> None:
        self.waiter: asyncio.Future | None = None
        self.ended = False

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """The session closes: end the wait."""
        self.ended = True
        self._wake()

    def describe(self) -> tuple[str, str]:
        """Nothing for the registry: a request session has no entry."""
        return "", ""

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def ready(self) -> bool:
        """Whether the wait is over before it starts."""
        return self.ended

    async def wait(self, timeout: float, gone: asyncio.Future | None) -> None:
        """Until woken, the client leaves (``gone``), or ``timeout`` seconds pass."""
        if self.ready() or timeout <= 0:
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


class _PollWire(_Wire):
    """A long poll's side: the session's outbox writes envelopes here, and the first wakes the poll."""

    __slots__ = ("frames",)

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[str] = []

    async def send(self, message: dict) -> None:
        """The outbox's ASGI send: keep the envelope for the answer."""
        self.frames.append(message["text"])
        self._wake()

    def ready(self) -> bool:
        """Whether the wait is over before it starts: an envelope came already, or the end."""
        return self.ended or bool(self.frames)

    def take_into(self, states: dict[str, ChannelState]) -> None:
        """Apply the envelopes written so far to the channels' states."""
        frames, self.frames = self.frames, []
        for text in frames:
            channel, offset, epoch = _position_of(text)
            state = states.get(channel)
            if state is not None:
                state.apply(offset, epoch, text)


async def _follow(session: RequestSession, positions: dict[str, tuple[str, int] | None],
                  errors: dict[str, ProtocolError]) -> dict[str, ChannelState]:
    """The session follows the channels (``Session.follow``); refusals go to ``errors``, Redis
    failures are a 503."""
    try:
        answers = await session.follow(positions)
    except (RedisError, OSError, TimeoutError) as exc:
        raise HttpError(503, "the message bus is unavailable; retry later", headers=[(b"retry-after", b"2")]) from exc
    states = {}
    for channel, answer in answers.items():
        if isinstance(answer, ProtocolError):
            errors[channel] = answer
        else:
            states[channel] = ChannelState.of(answer, positions[channel])
    return states


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
        return await auth.token_identity(token.strip(), "bearer")
    if "ticket" in query:
        return await auth.ticket_identity(query["ticket"][0])
    session = await auth.session_user(scope)
    if session is not None:
        user, store = session
        return auth.Identity(user, store.get_expiry_date(), "session")
    raise auth.AuthFailure("missing credentials")


# ---------------------------------------------------------------------- the poll, shared by poll/ and events/


async def poll(identity: auth.Identity, ip: str, positions: dict[str, tuple[str, int] | None], timeout: float,
               gone: asyncio.Future | None, errors: dict[str, ProtocolError]) -> dict[str, ChannelState]:
    """Catch up on every allowed channel, then wait up to ``timeout`` for the first new message.

    Answers at once when there is anything to tell: messages after a position, a channel that
    cannot be recovered, or a channel asked for without a position (its position is news).
    """
    wire = _PollWire()
    session = RequestSession(wire, identity, ip=ip, send=wire.send)
    try:
        states = await _follow(session, positions, errors)
        if not states:
            return {}
        session.release({c: s.offset for c, s in states.items()})
        wire.take_into(states)
        news = any(s.messages or not s.recovered or s.snapshot for s in states.values())
        if not news:
            await wire.wait(jittered(timeout), gone)
            wire.take_into(states)
        return states
    finally:
        await session.end()


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


def _ip(scope: dict) -> str:
    return (scope.get("client") or ("", 0))[0]


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
        states = await poll(identity, _ip(scope), positions, timeout, gone, errors)
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
        states = await poll(identity, _ip(scope), {channel: since}, timeout if since else 0, gone, errors)
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
    wire = _StreamWire(send)
    session = RequestSession(wire, identity, ip=_ip(scope), send=wire.write)
    gone = _gone_watch(receive)
    try:
        states = await _follow(session, {c: resume.get(c) for c in channels if c not in errors}, errors)
        if not states:
            first = next(iter(errors.values()))
            raise HttpError(404 if first.code == "not_found" else 403 if first.code == "forbidden" else 400,
                            "no channel of this stream can be read",
                            body={"detail": "no channel of this stream can be read",
                                  "channels": {c: _error_json(e)["error"] for c, e in errors.items()}})
        await _stream(send, session, wire, states, errors, gone, set(resume))
    finally:
        gone.cancel()
        await session.end()


# What the stream pushes to its session's outbox when it has been idle for ``heartbeat_s``: it
# goes out in turn with the envelopes (never an envelope, which is never empty).
_PING = ""


class _StreamWire(_Wire):
    """An event stream's side: the session's outbox writes envelopes here, each sent as an event
    with the stream's cursor after it."""

    __slots__ = ("send", "states", "cursor", "written")

    def __init__(self, send: Send) -> None:
        super().__init__()
        self.send = send
        self.states: dict[str, ChannelState] = {}
        self.cursor: dict[str, tuple[str, int]] = {}
        self.written = time.monotonic()  # when the stream last sent something

    async def write(self, message: dict) -> None:
        """The outbox's ASGI send: an envelope as an event (a ``resync`` when its epoch is new,
        nothing when the catch-up covered it), or a ping."""
        text = message["text"]
        if text == _PING:
            body = b": ping\n\n"
        else:
            channel, offset, epoch = _position_of(text)
            state = self.states.get(channel)
            was_epoch = state.epoch if state is not None else None
            if state is None or not state.apply(offset, epoch, text):
                return
            state.messages.clear()
            self.cursor[channel] = (state.epoch, state.offset)
            if state.epoch != was_epoch:
                resync = {"channel": channel, "epoch": state.epoch, "offset": state.offset}
                body = _event("resync", orjson.dumps(resync).decode(), encode_cursor(self.cursor))
            else:
                body = _event(_type_of(text), text, encode_cursor(self.cursor))
        self.written = time.monotonic()
        await self.send({"type": "http.response.body", "body": body, "more_body": True})


async def _stream(send: Send, session: RequestSession, wire: _StreamWire, states: dict[str, ChannelState],
                  errors: dict[str, ProtocolError], gone: asyncio.Future, resumed: set[str]) -> None:
    heartbeat = setting("HEARTBEAT_S")
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
    wire.states, wire.cursor, wire.written = states, cursor, time.monotonic()
    # Live envelopes from here on: those held while catching up first, then as the hub writes them.
    session.release({c: s.offset for c, s in states.items()})
    # The session closes the stream when the credentials run out, the reader is too slow
    # (``OUTBOX_MAX_BYTES`` waiting) or the hub lost what it could not replay: the client
    # reconnects with its cursor and resumes.
    session.close_when_expired()
    # ``outbox.closed`` too: a write that failed closed the outbox, and nothing more would go out.
    while not gone.done() and not wire.ended and not session.outbox.closed:
        await wire.wait(wire.written + heartbeat - time.monotonic(), gone)
        if not gone.done() and not wire.ended and time.monotonic() - wire.written >= heartbeat:
            wire.written = time.monotonic()  # once per idle interval, even while the ping waits in the outbox
            session.outbox.push(_PING)
    await session.end()  # nothing is written after the end
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
