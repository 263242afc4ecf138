"""The Engine.IO 4 packet codec (written from the protocol's public specification).

A packet is a type digit and an optional payload. Over WebSocket each packet is one frame
(a binary frame is a ``message`` packet with binary data); over HTTP long-polling packets are
joined with the record separator ``\\x1e`` and binary data is base64 behind a ``b``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = range(7)
SEPARATOR = "\x1e"


class PacketError(ValueError):
    """A packet or payload that does not follow the encoding."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One Engine.IO packet: its type and its data (text, bytes, or None)."""

    type: int
    data: str | bytes | None = None


def encode(packet: Packet) -> str | bytes:
    """A packet as one WebSocket frame: text, or the raw bytes of a binary message."""
    if isinstance(packet.data, bytes):
        if packet.type != MESSAGE:
            raise PacketError("only message packets carry binary data")
        return packet.data
    return str(packet.type) if packet.data is None else f"{packet.type}{packet.data}"


def decode(frame: str | bytes) -> Packet:
    """The packet of one WebSocket frame; PacketError for anything else."""
    if isinstance(frame, bytes):
        return Packet(MESSAGE, frame)
    if not frame or not "0" <= frame[0] <= "6":
        raise PacketError("unknown packet type")
    return Packet(ord(frame[0]) - 48, frame[1:] if len(frame) > 1 else None)


def encode_payload(packets: list[Packet]) -> str:
    """Packets as one HTTP long-polling body."""
    parts = []
    for packet in packets:
        if isinstance(packet.data, bytes):
            parts.append("b" + base64.b64encode(packet.data).decode())
        else:
            parts.append(encode(packet))
    return SEPARATOR.join(parts)


def decode_payload(body: str) -> list[Packet]:
    """The packets of an HTTP long-polling body; PacketError when one is malformed."""
    packets = []
    for part in body.split(SEPARATOR):
        if part.startswith("b"):
            try:
                packets.append(Packet(MESSAGE, base64.b64decode(part[1:], validate=True)))
            except (binascii.Error, ValueError):
                raise PacketError("invalid base64 data") from None
        else:
            packets.append(decode(part))
    return packets
