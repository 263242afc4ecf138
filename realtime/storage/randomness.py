"""Random identifiers without a system call each: epochs, envelope ids, outbox tokens.

``os.urandom`` is one system call per read; a notification takes several random ids (its own,
its envelope's, its outbox row's token), and a process publishing a thousand a second felt it
(about 5 % of its time). Here they are cut from a buffer of the system's random bytes, refilled
8 KB at a time under a lock. A forked child starts with an empty buffer, so it never hands out
its parent's bytes.
"""

from __future__ import annotations

import os
import threading

_REFILL_BYTES = 8192
_buffer = bytearray()
_lock = threading.Lock()


def random_bytes(count: int) -> bytes:
    """``count`` bytes from the system's random source (count <= 8192)."""
    global _buffer
    with _lock:
        if len(_buffer) < count:
            _buffer = bytearray(os.urandom(_REFILL_BYTES))
        chunk = bytes(_buffer[-count:])
        del _buffer[-count:]
    return chunk


def token_hex(count: int) -> str:
    """``count`` random bytes in hex, like ``secrets.token_hex(count)``."""
    return random_bytes(count).hex()


def _uuid4_from_hex(h: str) -> str:
    """32 random hex digits as a version 4 UUID string (version and variant bits set)."""
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def uuid4_str() -> str:
    """A random (version 4) UUID as a string, like ``str(uuid.uuid4())``."""
    return _uuid4_from_hex(random_bytes(16).hex())


def uuid4_strs(count: int) -> list[str]:
    """``count`` of them from one read of the random source (a fan-out's ids: more than the buffer holds)."""
    random = os.urandom(16 * count).hex()
    return [_uuid4_from_hex(random[start:start + 32]) for start in range(0, 32 * count, 32)]


def _forget() -> None:
    global _buffer, _lock
    _buffer = bytearray()
    _lock = threading.Lock()  # a lock held by another thread at the fork stays held in the child


os.register_at_fork(after_in_child=_forget)
