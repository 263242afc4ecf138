"""The transport's message schemas, validated at the edge, and the registry of event types.

Outbound: the envelope (built once per message, as bytes) and the frames the transport itself
sends. The payloads of the domain's message types (``notification``, ``execution_update``, ...)
are defined by their apps (``notifications/events.py``, ``executions/events.py``), which register
them here (``register_event_types``) so that every publication is checked against them. Inbound:
the client commands, decoded with msgspec into typed structs so that handlers receive checked data
and every bad frame maps to one protocol error code. Time on the wire: ``wire_time``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from realtime.storage import randomness

CHANNEL_NAME_RE = re.compile(r"^[A-Za-z0-9_\-.:@=]{1,100}$")


class ProtocolError(ValueError):
    """A client error answered with an ``error`` frame; the connection stays open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reply_to: Any = None


# ---------------------------------------------------------------- event types

# Types the transport itself defines; the domain apps register theirs (``register_event_types``).
TRANSPORT_TYPES = frozenset({"system_event", "command"})

_EVENT_SCHEMAS: dict[str, type[msgspec.Struct]] = {}


def register_event_type(message_type: str, schema: type[msgspec.Struct]) -> None:
    """Register the payload schema of a domain's message type (from its ``AppConfig.ready``).

    Every publication of that type is then checked against ``schema`` before it is queued.
    Registering the same schema again is a no-op; another schema for a taken type is an error.
    """
    if message_type in TRANSPORT_TYPES:
        raise ValueError(f"{message_type!r} is a transport type")
    known = _EVENT_SCHEMAS.setdefault(message_type, schema)
    if known is not schema:
        raise ValueError(f"{message_type!r} is already registered with {known.__qualname__}")


def register_event_types(types: Mapping[str, type[msgspec.Struct]]) -> None:
    """``register_event_type`` of each of an app's message types."""
    for message_type, schema in types.items():
        register_event_type(message_type, schema)


def event_types() -> dict[str, type[msgspec.Struct]]:
    """Every registered message type and its payload schema (a copy)."""
    return dict(_EVENT_SCHEMAS)


def validate_payload(message_type: str, payload: Any) -> None:
    """Raise ValueError when a registered type's payload does not match its schema."""
    schema = _EVENT_SCHEMAS.get(message_type)
    if schema is None:
        return
    try:
        msgspec.convert(payload, type=schema, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid {message_type} payload: {exc}") from None


@functools.cache
def _payload_decoder(schema: type[msgspec.Struct]) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(schema, strict=False)


def validate_payload_json(message_type: str, payload_json: bytes) -> None:
    """``validate_payload`` of a payload already serialized (checked without a dict);
    a payload of another type must at least be JSON."""
    schema = _EVENT_SCHEMAS.get(message_type)
    try:
        if schema is None:
            orjson.loads(payload_json)
            return
        _payload_decoder(schema).decode(payload_json)
    except (msgspec.ValidationError, msgspec.DecodeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"invalid {message_type} payload: {exc}") from None


# ---------------------------------------------------------------- time on the wire


def wire_time(moment: datetime) -> str:
    """The one form of every timestamp on the wire (envelopes, payloads, frames, REST):
    ISO 8601 in UTC with milliseconds and a ``Z``, e.g. ``2026-11-24T21:30:00.123Z``: what
    JavaScript's ``Date.prototype.toISOString`` writes and every ``Date`` parses. A naive
    datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wire_time_or_none(moment: datetime | None) -> str | None:
    """``wire_time``, or None for None (an optional timestamp)."""
    return None if moment is None else wire_time(moment)


def within_wire_precision(bound: datetime) -> datetime:
    """The last instant an inclusive upper bound given on the wire stands for.

    The wire carries milliseconds, the database microseconds: a client that echoes a
    notification's ``created_at`` as ``before`` means that notification too, so the bound covers
    its whole millisecond (``x <= bound`` compared at the wire's precision).
    """
    return bound.replace(microsecond=bound.microsecond - bound.microsecond % 1000 + 999)


def validate_channel_name(channel: Any) -> str:
    """Return the channel name or raise ProtocolError(invalid_message)."""
    # fullmatch: with match(), the pattern's "$" also matches before a trailing newline.
    if not isinstance(channel, str) or not CHANNEL_NAME_RE.fullmatch(channel):
        raise ProtocolError("invalid_message", "channel must be 1-100 ASCII letters, digits or _-.:@=")
    return channel


def now_iso() -> str:
    """The current time as the wire writes it (``wire_time``)."""
    return wire_time(datetime.now(UTC))


def envelope_parts(
    *, channel: str, message_type: str, payload: Any, sender: str, target: Any = None,
    snapshot: bool = False, timestamp: str | None = None,
) -> tuple[bytes, bytes]:
    """The envelope JSON split around its position: ``head + offset + ,"epoch":"e" + tail``.

    Serialized once per message; Redis inserts the offset and epoch it assigns. ``timestamp``:
    ``now_iso()`` unless given (a batch reads the clock once).
    """
    return envelope_parts_json(channel=channel, message_type=message_type,
                               payload_json=orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS),
                               sender=sender, timestamp=timestamp or now_iso(), target=target, snapshot=snapshot)


def new_uuids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as strings, like ``str(uuid.uuid4())``, from one read
    of the random source: ``uuid.uuid4()`` reads it once per id, which a batch of 100,000 notices."""
    return randomness.uuid4_strs(count)


def envelope_parts_json(
    *, channel: str, message_type: str, payload_json: bytes, sender: str, timestamp: str, target: Any = None,
    snapshot: bool = False, message_id: str | None = None,
) -> tuple[bytes, bytes]:
    """``envelope_parts`` of a payload already serialized, stamped ``timestamp`` (``now_iso()``):
    for batches, whose messages share one timestamp and are serialized without a dict each.
    ``message_id``: the envelope's id (a fresh UUID unless given: ``new_uuids`` makes a batch's)."""
    head = b'{"type":' + orjson.dumps(message_type) + b',"channel":' + orjson.dumps(channel) + b',"offset":'
    tail = (
        b',"id":' + orjson.dumps(message_id or randomness.uuid4_str())
        + b',"timestamp":' + orjson.dumps(timestamp)
        + b',"sender":' + orjson.dumps(sender)
        + (b',"target":' + orjson.dumps(target) if target is not None else b"")
        + (b',"snapshot":true' if snapshot else b"")
        + b',"payload":' + payload_json
        + b"}"
    )
    return head, tail


def envelope_bytes(head: bytes, tail: bytes, *, offset: int, epoch: str) -> bytes:
    """Assemble an envelope locally (for messages that are not stored, e.g. snapshots)."""
    return head + str(offset).encode() + b',"epoch":"' + epoch.encode() + b'"' + tail


def frame(message_type: str, payload: Any = None, reply_to: Any = None) -> str:
    """A frame of the connection (welcome, replies, errors): not part of any channel's stream.

    ``payload``: one of the frame structs below (``Welcome``, ``Subscribed``, ...), or plain JSON
    data (a command's result).
    """
    message: dict[str, Any] = {"type": message_type}
    if reply_to is not None:
        message["reply_to"] = reply_to
    if payload is not None:
        message["payload"] = msgspec.to_builtins(payload) if isinstance(payload, msgspec.Struct) else payload
    return orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS).decode()


# ---------------------------------------------------------------- frames (server to client)


class ChannelPosition(msgspec.Struct):
    """Where a channel's stream stands: its epoch and the offset of its last message."""

    epoch: str
    offset: int


class Welcome(msgspec.Struct):
    """Payload of ``welcome``, the first frame of an authenticated connection."""

    user_id: str
    connection_id: str
    expires_at: str | None  # wire_time; None: the credentials do not expire
    heartbeat_s: int
    channels: dict[str, ChannelPosition]


class Subscribed(msgspec.Struct):
    """Payload of ``subscribed``: the channel's position, whether the gap since ``since`` was
    filled (``recovered``), and how many of the frames that follow are that replay (``replayed``)."""

    channel: str
    epoch: str
    offset: int
    recovered: bool
    replayed: int


class Unsubscribed(msgspec.Struct):
    """Payload of ``unsubscribed``."""

    channel: str


class PublishedFrame(msgspec.Struct):
    """Payload of ``published``: where the client's publication was stored."""

    channel: str
    offset: int
    epoch: str


class AuthRefreshed(msgspec.Struct):
    """Payload of ``auth.refreshed``: when the refreshed session ends."""

    expires_at: str | None


class ErrorPayload(msgspec.Struct):
    """Payload of ``error``: one of the protocol's codes and a human-readable message."""

    code: str
    message: str


# Every frame the server sends outside the channels' streams, and its payload struct (None: no
# struct). ``tests/realtime/test_schemas.py`` checks that each ``frame(...)`` call passes its struct.
FRAMES: dict[str, type[msgspec.Struct] | None] = {
    "welcome": Welcome,
    "subscribed": Subscribed,
    "unsubscribed": Unsubscribed,
    "published": PublishedFrame,
    "auth.refreshed": AuthRefreshed,
    "pong": None,
    "error": ErrorPayload,
    # ``{name, result}``: the service's answer, written by orjson as it is (a dict, not a struct).
    "command_result": None,
}


# ---------------------------------------------------------------- control messages (server to session)
# Sent on the channel layer to a user's group (``realtime.publish``'s ``*_user_on_commit``) or
# to one connection's process (``realtime.ops.probes``), as dicts: ``control_message(struct)``.


class ControlSubscribe(msgspec.Struct, tag="rt.subscribe", tag_field="type"):
    """Subscribe the user's live connections to ``channel`` (e.g. the user joined a team)."""

    channel: str


class ControlUnsubscribe(msgspec.Struct, tag="rt.unsubscribe", tag_field="type"):
    """Remove the user's live connections from ``channel`` (e.g. the user left a team)."""

    channel: str


class ControlDisconnect(msgspec.Struct, tag="rt.disconnect", tag_field="type", omit_defaults=True):
    """Close connections with ``code``: all of the user's, or only those authenticated by ``auth``
    (e.g. ``"session"``), of one session (``session``: ``sessions.session_tag``), or one
    connection (``connection_id``)."""

    code: int
    reason: str
    auth: str | None = None
    session: str | None = None
    connection_id: str | None = None


ControlMessage = ControlSubscribe | ControlUnsubscribe | ControlDisconnect


def control_message(message: ControlMessage) -> dict[str, Any]:
    """A control message as the channel layer carries it (a dict with its ``type``)."""
    return msgspec.to_builtins(message)


def parse_control_message(message: dict[str, Any]) -> ControlMessage:
    """A control message read back from the channel layer (``msgspec.ValidationError`` if malformed)."""
    return msgspec.convert(message, type=ControlMessage)


# ---------------------------------------------------------------- inbound commands


class Position(msgspec.Struct, forbid_unknown_fields=True):
    """A client's last seen position in a channel."""

    epoch: str
    offset: int


class Subscribe(msgspec.Struct, forbid_unknown_fields=True):
    """``subscribe``: join a channel, optionally recovering what was missed since a position."""

    type: str
    channel: str
    id: Any = None
    since: Position | None = None


class Unsubscribe(msgspec.Struct, forbid_unknown_fields=True):
    """``unsubscribe``: leave a channel."""

    type: str
    channel: str
    id: Any = None


class Ping(msgspec.Struct, forbid_unknown_fields=True):
    """``ping``: heartbeat, answered with ``pong``."""

    type: str
    id: Any = None


class AuthRefresh(msgspec.Struct, forbid_unknown_fields=True):
    """``auth.refresh``: a new access token of the same user extends the session."""

    type: str
    token: str
    id: Any = None


class Publish(msgspec.Struct, forbid_unknown_fields=True):
    """``publish``: a client publication, where the channel's policy allows it."""

    type: str
    channel: str
    payload: Any
    id: Any = None
    event: str = "publication"


class CommandCall(msgspec.Struct, forbid_unknown_fields=True):
    """The ``payload`` of a ``command``: a named domain action and its arguments."""

    name: str
    args: dict[str, Any] = {}


class Command(msgspec.Struct, forbid_unknown_fields=True):
    """``command``: a domain action routed to a registered service handler."""

    type: str
    payload: CommandCall
    id: Any = None


COMMANDS: dict[str, type[msgspec.Struct]] = {
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "ping": Ping,
    "auth.refresh": AuthRefresh,
    "publish": Publish,
    "command": Command,
}


MAX_ID_CHARS = 128
_ID_RANGE = range(-(2**63), 2**64)  # what orjson reads as an integer (larger ones become floats)


def valid_id(message_id: Any) -> bool:
    """Whether a command ``id`` may be echoed: absent, a string of at most ``MAX_ID_CHARS``
    characters, or an integer. Anything else (a nested structure, a huge string) would be
    copied into every reply, and a deep one cannot even be serialized back."""
    if message_id is None:
        return True
    if isinstance(message_id, str):
        return len(message_id) <= MAX_ID_CHARS
    return type(message_id) is int and message_id in _ID_RANGE


def parse_command(raw: str | bytes) -> msgspec.Struct:
    """Decode one client frame into its command struct, or raise ProtocolError.

    The frame's ``id`` is attached to the error (``reply_to``) whenever it could be read and
    is a valid id (``valid_id``); a frame with any other id is refused as a whole.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("invalid_json", "the frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_message", "a command must be a JSON object")
    message_id = data.get("id")
    if not valid_id(message_id):
        raise ProtocolError("invalid_message",
                            f"id must be a string of at most {MAX_ID_CHARS} characters or an integer")
    command_type = data.get("type")
    if not isinstance(command_type, str):
        raise _with_id(ProtocolError("invalid_message", "a command needs a string 'type'"), message_id)
    schema = COMMANDS.get(command_type)
    if schema is None:
        raise _with_id(ProtocolError("unknown_command", f"unknown command type {command_type[:50]!r}"), message_id)
    try:
        return msgspec.convert(data, type=schema)
    except msgspec.ValidationError as exc:
        raise _with_id(ProtocolError("invalid_message", str(exc)), message_id) from None


def _with_id(error: ProtocolError, message_id: Any) -> ProtocolError:
    error.reply_to = message_id  # already checked by ``valid_id``
    return error
