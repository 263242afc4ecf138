"""Property-based fuzzing of a live server: random and adversarial frames from many sockets of one
user (deep nesting in every field, huge numbers, unicode, invalid UTF-8, binary frames, bursts,
frames after the close), and afterwards no ghost: the user's registry count drops to 0, the
process still serves, a normal connect gets ``welcome``, and nothing failed unhandled.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
import uuid

import orjson
import pytest
import websockets
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from realtime.storage import registry
from tests.conftest import access_token_for
from tests.live import LiveServer

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SOCKETS_PER_EXAMPLE = 4
COMMANDS = ["ping", "subscribe", "unsubscribe", "publish", "command", "auth.refresh"]
FIELDS = ["id", "channel", "since", "payload", "token", "event", "name", "args", "zz"]


@pytest.fixture(scope="module")
def server(django_db_setup):
    with LiveServer() as live:
        yield live


@pytest.fixture(scope="module")
def victim(server, django_db_blocker):
    with django_db_blocker.unblock():
        user = get_user_model().objects.create_user(username=f"fz-{uuid.uuid4().hex[:10]}", password="pw-1234567")
    yield user
    with django_db_blocker.unblock():
        user.delete()


# ------------------------------------------------------------------ strategies: raw JSON fragments

scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
).map(lambda v: orjson.dumps(v).decode())
huge_numbers = st.sampled_from(["1" * 400, "-" + "9" * 30, "1e400", "-1e-400", "1.5e308", str(2**64),
                                str(-(2**63) - 1)])
# Depths around orjson's limits: 254 levels when writing, 1024 when reading.
deep = st.tuples(st.sampled_from([100, 253, 254, 255, 300, 600, 1000, 1022, 1023, 1024, 1100]),
                 st.sampled_from(["[]", "{}"])).map(
    lambda d: ('{"a":' * d[0] + "1" + "}" * d[0]) if d[1] == "{}" else ("[" * d[0] + "]" * d[0]))
nested = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
).map(lambda v: orjson.dumps(v).decode())
fragments = st.one_of(scalars, huge_numbers, deep, nested,
                      st.sampled_from(['"user:1"', '"broadcast"', '{"epoch":"e","offset":1}', '"bearer"']))


@st.composite
def command_frames(draw) -> str:
    """A JSON object with a (usually known) type and adversarial values in every field."""
    kind = draw(st.sampled_from(COMMANDS) | st.text(max_size=20))
    fields = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=5))
    parts = [f'"type":{orjson.dumps(kind).decode()}'] + [f'"{f}":{draw(fragments)}' for f in fields]
    if kind == "command" and draw(st.booleans()):
        parts.append(f'"payload":{{"name":{draw(fragments)},"args":{{"x":{draw(fragments)}}}}}')
    return "{" + ",".join(parts) + "}"


SHAPES = {  # each command with exactly its own fields, so that the adversarial values get past the schema
    "ping": ["id"], "subscribe": ["id", "channel", "since"], "unsubscribe": ["id", "channel"],
    "publish": ["id", "channel", "payload", "event"], "auth.refresh": ["id", "token"], "command": ["id", "payload"],
}
plausible = {
    "id": st.integers(0, 10**6).map(str) | st.text(max_size=10).map(lambda t: orjson.dumps(t).decode()),
    "channel": st.sampled_from(['"broadcast"', '"user:1"', '"team:1"', '"execution:x"', '"room:1"']),
    "since": st.just('{"epoch":"e","offset":0}'),
    "payload": nested,
    "event": st.just('"publication"'),
    "token": st.just('"not.a.token"'),
}


@st.composite
def shaped_frames(draw) -> str:
    """A command with its own fields only, one of them (or more) adversarial."""
    kind = draw(st.sampled_from(sorted(SHAPES)))
    values = {}
    for field in SHAPES[kind]:
        if kind == "command" and field == "payload":
            values[field] = f'{{"name":{draw(fragments)},"args":{{"x":{draw(fragments)}}}}}'
        else:
            values[field] = draw(fragments if draw(st.booleans()) else plausible[field])
    return "{" + ",".join([f'"type":"{kind}"'] + [f'"{f}":{v}' for f, v in values.items()]) + "}"


frames = st.one_of(
    shaped_frames(),
    shaped_frames(),  # twice: most frames get past the parser to the handlers
    command_frames(),
    command_frames().map(str.encode),  # the same, as binary frames
    st.text(max_size=200).filter(lambda t: all(not 0xD800 <= ord(c) <= 0xDFFF for c in t)),  # any unicode
    st.binary(max_size=200),  # invalid UTF-8 among them
    deep,
)
socket_plans = st.lists(
    st.tuples(st.lists(frames, min_size=1, max_size=40), st.booleans()),  # (frames, then frames after the close)
    min_size=1, max_size=SOCKETS_PER_EXAMPLE,
)


# ------------------------------------------------------------------ a client that may misbehave


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame, written below websockets (which refuses to send after a close)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _run_socket(server: LiveServer, token: str, plan: list, after_close: bool, replies: list) -> None:
    ws = await websockets.connect(server.ws_url, subprotocols=["renum.v1", f"bearer.{token}"], proxy=None,
                                  open_timeout=10, max_size=None)
    try:
        first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        replies.append(first)
        if after_close:
            # A close frame, then more frames on the same connection: the server must ignore them.
            ws.transport.write(_client_frame(0x8, struct.pack("!H", 1000)))
            for frame in plan[:5]:
                data = frame.encode() if isinstance(frame, str) else frame
                ws.transport.write(_client_frame(0x1 if isinstance(frame, str) else 0x2, data))
        else:
            for frame in plan:  # a burst: no waiting for answers
                try:
                    await ws.send(frame)
                except websockets.ConnectionClosed:
                    break
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                replies.append(orjson.loads(await asyncio.wait_for(ws.recv(), 0.3)))
            except (TimeoutError, websockets.ConnectionClosed):
                break
    finally:
        ws.transport.abort() if after_close else await ws.close()


def _registry_count(user) -> int:
    return registry.user_connection_count(str(user.pk))


async def _welcomed_and_served(server: LiveServer, user) -> tuple[str, dict]:
    ws = await websockets.connect(server.ws_url, subprotocols=["renum.v1", f"bearer.{access_token_for(user)}"],
                                  proxy=None, open_timeout=10)
    try:
        welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send('{"type":"ping","id":"after"}')
        while True:
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if reply.get("reply_to") == "after":
                return welcome["type"], reply
    finally:
        await ws.close()


# ------------------------------------------------------------------ the property


def test_no_frame_leaves_a_ghost_or_breaks_the_server(server, victim):
    token = access_token_for(victim)
    seen: list[dict] = []
    log_start = server.log_path.stat().st_size if server.log_path.exists() else 0

    # No explain phase: its line tracing slows every client frame by orders of magnitude.
    @settings(max_examples=25, deadline=None, database=None, phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(socket_plans)
    def example(plans):
        replies: list[dict] = []

        async def run() -> None:
            await asyncio.gather(*(_run_socket(server, token, plan, after, replies) for plan, after in plans))

        asyncio.run(run())
        for reply in replies:
            assert isinstance(reply, dict) and isinstance(reply.get("type"), str)
            # Only short scalar ids come back.
            reply_to = reply.get("reply_to")
            assert reply_to is None or (isinstance(reply_to, str) and len(reply_to) <= 128) or (
                type(reply_to) is int)
            assert not (reply["type"] == "error" and reply["payload"]["code"] == "internal"), reply
        seen.extend(replies)

    example()

    deadline = time.monotonic() + 10
    while _registry_count(victim) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _registry_count(victim) == 0
    assert server.process.poll() is None
    kind, pong = asyncio.run(_welcomed_and_served(server, victim))
    assert (kind, pong) == ("welcome", {"type": "pong", "reply_to": "after"})
    log = server.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert "Exception in ASGI application" not in log
    assert "a frame failed" not in log and "failed\nTraceback" not in log
    assert any(r["type"] == "error" for r in seen)  # the fuzzing reached the parser, not only the handshake
