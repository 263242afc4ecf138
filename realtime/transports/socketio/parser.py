"""The Socket.IO 5 packet codec (written from the protocol's public specification).

A packet travels as the data of one Engine.IO ``message`` packet:
``<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]``; the namespace is written only
when it is not ``/``. Binary events and acks send their binary arguments as that many
Engine.IO binary messages after the text, replaced in the JSON by
``{"_placeholder": true, "num": <index>}``; ``Decoder`` puts them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)
MAX_ATTACHMENTS = 10


class PacketError(ValueError):
    """A packet that does not follow the encoding (the connection is closed)."""


@dataclass(slots=True)
class Packet:
    """One Socket.IO packet."""

    type: int
    namespace: str = "/"
    data: Any = None
    id: int | None = None
    attachments: list[bytes] = field(default_factory=list)


def has_binary(value: Any) -> bool:
    if isinstance(value, bytes | bytearray | memoryview):
        return True
    if isinstance(value, list):
        return any(has_binary(item) for item in value)
    if isinstance(value, dict):
        return any(has_binary(item) for item in value.values())
    return False


def _deconstruct(value: Any, attachments: list[bytes]) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        attachments.append(bytes(value))
        return {"_placeholder": True, "num": len(attachments) - 1}
    if isinstance(value, list):
        return [_deconstruct(item, attachments) for item in value]
    if isinstance(value, dict):
        return {key: _deconstruct(item, attachments) for key, item in value.items()}
    return value


def _reconstruct(value: Any, attachments: list[bytes]) -> Any:
    if isinstance(value, list):
        return [_reconstruct(item, attachments) for item in value]
    if isinstance(value, dict):
        if value.get("_placeholder") is True and len(value) == 2:
            num = value.get("num")
            if not isinstance(num, int) or isinstance(num, bool) or not 0 <= num < len(attachments):
                raise PacketError("invalid attachment placeholder")
            return attachments[num]
        return {key: _reconstruct(item, attachments) for key, item in value.items()}
    return value


def encode(packet: Packet) -> list[str | bytes]:
    """A packet as Engine.IO message data: its text, then one bytes item per binary attachment.

    Events and acks whose data holds bytes become binary events and acks.
    """
    kind, data, attachments = packet.type, packet.data, []
    if kind in (EVENT, ACK) and has_binary(data):
        kind += BINARY_EVENT - EVENT
        data = _deconstruct(data, attachments)
    parts = [str(kind)]
    if attachments:
        parts.append(f"{len(attachments)}-")
    if packet.namespace != "/":
        parts.append(packet.namespace + ",")
    if packet.id is not None:
        parts.append(str(packet.id))
    if data is not None:
        parts.append(orjson.dumps(data).decode())
    return ["".join(parts), *attachments]


def encode_event(name: str, raw_args: list[str], ack_id: int | None = None, namespace: str = "/") -> str:
    """An EVENT packet's text from arguments already serialized as JSON (no re-encoding)."""
    head = "2" if namespace == "/" else f"2{namespace},"
    if ack_id is not None:
        head += str(ack_id)
    return f'{head}[{orjson.dumps(name).decode()}{"".join("," + arg for arg in raw_args)}]'


def _valid(packet: Packet) -> bool:
    kind, data = packet.type, packet.data
    if kind == CONNECT:
        return data is None or isinstance(data, dict)
    if kind == DISCONNECT:
        return data is None
    if kind == CONNECT_ERROR:
        return isinstance(data, dict | str)
    if kind in (EVENT, BINARY_EVENT):
        return isinstance(data, list) and len(data) > 0 and isinstance(data[0], str | int)
    return isinstance(data, list)  # ACK, BINARY_ACK


def decode_text(text: str) -> tuple[Packet, int]:
    """A packet from its text and the number of binary attachments still to come."""
    if not text or not "0" <= text[0] <= "6":
        raise PacketError("unknown packet type")
    kind, i, end = ord(text[0]) - 48, 1, len(text)
    count = 0
    if kind in (BINARY_EVENT, BINARY_ACK):
        dash = text.find("-", i)
        if dash < 0 or not text[i:dash].isdigit():
            raise PacketError("invalid attachment count")
        count = int(text[i:dash])
        if count > MAX_ATTACHMENTS:
            raise PacketError("too many attachments")
        i = dash + 1
    namespace = "/"
    if i < end and text[i] == "/":
        comma = text.find(",", i)
        namespace, i = (text[i:], end) if comma < 0 else (text[i:comma], comma + 1)
    start = i
    while i < end and "0" <= text[i] <= "9":
        i += 1
    ack_id = int(text[start:i]) if i > start else None
    data = None
    if i < end:
        try:
            data = orjson.loads(text[i:])
        except orjson.JSONDecodeError:
            raise PacketError("invalid JSON data") from None
    packet = Packet(kind, namespace, data, ack_id)
    if not _valid(packet) or (ack_id is not None and kind not in (EVENT, ACK, BINARY_EVENT, BINARY_ACK)):
        raise PacketError("invalid payload")
    return packet, count


class Decoder:
    """Decodes one connection's packets, collecting binary attachments as they arrive."""

    __slots__ = ("_pending", "_count", "_attachments")

    def __init__(self) -> None:
        self._pending: Packet | None = None
        self._count = 0
        self._attachments: list[bytes] = []

    def feed(self, data: str | bytes) -> Packet | None:
        """The packet completed by this Engine.IO message, or None while attachments are missing."""
        if isinstance(data, bytes):
            if self._pending is None:
                raise PacketError("unexpected binary data")
            self._attachments.append(data)
            if len(self._attachments) < self._count:
                return None
            packet, self._pending = self._pending, None
            packet.data = _reconstruct(packet.data, self._attachments)
            packet.type -= BINARY_EVENT - EVENT
            return packet
        if self._pending is not None:
            raise PacketError("text packet while attachments were expected")
        packet, count = decode_text(data)
        if packet.type in (BINARY_EVENT, BINARY_ACK):
            if count == 0:
                packet.type -= BINARY_EVENT - EVENT
                return packet
            self._pending, self._count, self._attachments = packet, count, []
            return None
        return packet
