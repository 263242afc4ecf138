"""Every message schema of the protocol, in one place, validated at the edge.

Outbound: the envelope (built once per message, as bytes) and the payloads of the built-in
types. Inbound: the client commands, decoded with msgspec into typed structs so that handlers
receive checked data and every bad frame maps to one protocol error code.
"""

from __future__ import annotations

import functools
import os
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import orjson

CHANNEL_NAME_RE = re.compile(r"^[A-Za-z0-9_\-.:@=]{1,100}$")
BUILTIN_TYPES = frozenset(
    {"notification", "notification_read", "unread_count", "execution_update", "system_event", "command",
     "notification_unread", "notification_archived", "notification_unarchived", "notification_deleted",
     "team_member_joined", "team_member_left", "team_member_role_changed", "team_renamed"}
)


class ProtocolError(ValueError):
    """A client error answered with an ``error`` frame; the connection stays open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reply_to: Any = None


# ---------------------------------------------------------------- outbound payloads


class NotificationAction(msgspec.Struct, forbid_unknown_fields=True):
    """What the front end does when a notification is clicked."""

    type: str
    payload: Any = None


class NotificationPayload(msgspec.Struct):
    """Payload of a ``notification`` message (the design's Notification)."""

    id: str
    user_id: str
    type: Literal["info", "success", "warning", "error"]
    title: str
    message: str
    read: bool
    created_at: str
    action: NotificationAction | None = None
    archived: bool = False


class ExecutionUpdatePayload(msgspec.Struct):
    """Payload of an ``execution_update`` message (the design's ExecutionUpdate)."""

    execution_id: str
    team_id: str
    status: Literal["queued", "running", "completed", "failed"]
    progress: int
    updated_at: str
    current_step: str | None = None
    result: Any = None
    error: str | None = None


class NotificationReadPayload(msgspec.Struct):
    """Payload of a ``notification_read`` message: which notifications became read."""

    ids: list[str]
    all: bool
    before: str | None = None


class UnreadCountPayload(msgspec.Struct):
    """Payload of an ``unread_count`` message."""

    count: int


class NotificationIdsPayload(msgspec.Struct, forbid_unknown_fields=True):
    """Payload of ``notification_unread``, ``notification_archived``, ``notification_unarchived``
    and ``notification_deleted``: which of the user's notifications changed that way."""

    ids: list[str]


class TeamMemberPayload(msgspec.Struct, forbid_unknown_fields=True):
    """Payload of ``team_member_joined`` and ``team_member_left`` on ``team:<id>``."""

    team_id: str
    user_id: str
    username: str
    role: Literal["owner", "member"]


class TeamMemberRoleChangedPayload(msgspec.Struct, forbid_unknown_fields=True):
    """Payload of ``team_member_role_changed`` on ``team:<id>``."""

    team_id: str
    user_id: str
    username: str
    role: Literal["owner", "member"]
    previous_role: Literal["owner", "member"]


class TeamRenamedPayload(msgspec.Struct, forbid_unknown_fields=True):
    """Payload of ``team_renamed`` on ``team:<id>``."""

    team_id: str
    name: str
    previous_name: str


_PAYLOAD_SCHEMAS: dict[str, type[msgspec.Struct]] = {
    "notification": NotificationPayload,
    "execution_update": ExecutionUpdatePayload,
    "unread_count": UnreadCountPayload,
    "notification_read": NotificationReadPayload,
    "notification_unread": NotificationIdsPayload,
    "notification_archived": NotificationIdsPayload,
    "notification_unarchived": NotificationIdsPayload,
    "notification_deleted": NotificationIdsPayload,
    "team_member_joined": TeamMemberPayload,
    "team_member_left": TeamMemberPayload,
    "team_member_role_changed": TeamMemberRoleChangedPayload,
    "team_renamed": TeamRenamedPayload,
}


def validate_payload(message_type: str, payload: Any) -> None:
    """Raise ValueError when a built-in type's payload does not match its schema."""
    schema = _PAYLOAD_SCHEMAS.get(message_type)
    if schema is None:
        return
    try:
        msgspec.convert(payload, type=schema, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid {message_type} payload: {exc}") from None
    if message_type == "execution_update" and not 0 <= payload["progress"] <= 100:
        raise ValueError("invalid execution_update payload: progress must be within 0..100")


@functools.cache
def _payload_decoder(schema: type[msgspec.Struct]) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(schema, strict=False)


def validate_payload_json(message_type: str, payload_json: bytes) -> None:
    """``validate_payload`` of a payload already serialized (checked without a dict);
    a payload of another type must at least be JSON."""
    schema = _PAYLOAD_SCHEMAS.get(message_type)
    try:
        if schema is None:
            orjson.loads(payload_json)
            return
        payload = _payload_decoder(schema).decode(payload_json)
    except (msgspec.ValidationError, msgspec.DecodeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"invalid {message_type} payload: {exc}") from None
    if message_type == "execution_update" and not 0 <= payload.progress <= 100:
        raise ValueError("invalid execution_update payload: progress must be within 0..100")


def validate_channel_name(channel: Any) -> str:
    """Return the channel name or raise ProtocolError(invalid_message)."""
    # fullmatch: with match(), the pattern's "$" also matches before a trailing newline.
    if not isinstance(channel, str) or not CHANNEL_NAME_RE.fullmatch(channel):
        raise ProtocolError("invalid_message", "channel must be 1-100 ASCII letters, digits or _-.:@=")
    return channel


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    random = os.urandom(16 * count).hex()
    ids = []
    for start in range(0, 32 * count, 32):
        h = random[start:start + 32]
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}")
    return ids


def envelope_parts_json(
    *, channel: str, message_type: str, payload_json: bytes, sender: str, timestamp: str, target: Any = None,
    snapshot: bool = False, message_id: str | None = None,
) -> tuple[bytes, bytes]:
    """``envelope_parts`` of a payload already serialized, stamped ``timestamp`` (``now_iso()``):
    for batches, whose messages share one timestamp and are serialized without a dict each.
    ``message_id``: the envelope's id (a fresh UUID unless given: ``new_uuids`` makes a batch's)."""
    head = b'{"type":' + orjson.dumps(message_type) + b',"channel":' + orjson.dumps(channel) + b',"offset":'
    tail = (
        b',"id":' + orjson.dumps(message_id or str(uuid.uuid4()))
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
    """A control frame (welcome, replies, errors): not part of any channel's stream."""
    message: dict[str, Any] = {"type": message_type}
    if reply_to is not None:
        message["reply_to"] = reply_to
    if payload is not None:
        message["payload"] = payload
    return orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS).decode()


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
