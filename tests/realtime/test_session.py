"""The session core (realtime.core.session) without a socket: a recording transport stands in for the
WebSocket consumer; the node, Redis and the database are real."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from asgiref.sync import sync_to_async

from realtime.conf import setting
from realtime.core.auth import Identity
from realtime.core.channels import register_channel
from realtime.core.session import Session
from realtime.fanout.node import get_node
from realtime.storage import registry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _close_thread_connections(close_thread_connections):
    """Async tests here touch the database from asgiref's thread (PostgreSQL: closed after each)."""


class RecordingTransport:
    """What a codec does for a session, recorded: the frames it would write and the closes."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.closed: list[tuple[int | None, str | None]] = []

    async def send(self, message: dict) -> None:
        self.sent.append(orjson.loads(message["text"]))

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed.append((code, reason))

    def describe(self) -> tuple[str, str]:
        return "test-agent/1.0", "tab-1"

    def frames(self, kind: str) -> list[dict]:
        return [f for f in self.sent if f["type"] == kind]


async def _session(user, transport: RecordingTransport, connection_id: str = "c-1") -> Session:
    session = Session(transport, Identity(user, None, "jwt"), connection_id=connection_id, ip="192.0.2.7",
                      session_key=None, send=transport.send, turn=asyncio.Lock(), connected_at=time.time())
    await session.start()
    return session


def _limits(settings, **values) -> None:
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, **values}


async def test_a_started_session_is_welcomed_with_its_positions_and_listed_in_the_registry(user):
    transport = RecordingTransport()

    session = await _session(user, transport)
    [entry] = await sync_to_async(registry.live_connections)()

    [welcome] = transport.sent
    assert welcome["type"] == "welcome"
    assert welcome["payload"]["connection_id"] == "c-1"
    assert set(welcome["payload"]["channels"]) == {f"user:{user.pk}", "broadcast"}
    assert session.subscribed == {f"user:{user.pk}", "broadcast"}
    assert (entry["connection_id"], entry["ip"], entry["user_agent"], entry["client_id"]) == \
        ("c-1", "192.0.2.7", "test-agent/1.0", "tab-1")
    assert entry["channels"] == ["broadcast", f"user:{user.pk}"]
    await session.end()


async def test_an_ended_session_leaves_the_node_and_the_registry(user):
    session = await _session(user, RecordingTransport())
    node = await get_node()

    await session.end()
    await session.end()  # idempotent

    assert "c-1" not in node.hub.connections
    assert all(session not in subs for subs in node.hub.channels.values())
    assert str(user.pk) not in node.control.users
    assert await sync_to_async(registry.user_connection_count)(str(user.pk)) == 0


async def test_commands_are_answered_with_their_reply_to(user):
    transport = RecordingTransport()
    session = await _session(user, transport)

    await session.receive('{"type": "ping", "id": 4}')
    await session.receive(b'{"type": "unsubscribe", "id": 5, "channel": "broadcast"}')
    await session.receive('{"type": "unsubscribe", "id": 6, "channel": "broadcast"}')

    assert transport.sent[1:] == [
        {"type": "pong", "reply_to": 4},
        {"type": "unsubscribed", "reply_to": 5, "payload": {"channel": "broadcast"}},
        {"type": "error", "reply_to": 6, "payload": {"code": "not_found", "message": "not subscribed to broadcast"}},
    ]
    assert session.subscribed == {f"user:{user.pk}"}
    await session.end()


async def test_a_subscribe_after_a_position_replays_what_was_missed(user, restore_registries):
    from realtime.publish import apublish

    register_channel("room:", can_subscribe=lambda user, channel: True)
    transport = RecordingTransport()
    session = await _session(user, transport)
    await session.receive('{"type": "subscribe", "id": 1, "channel": "room:a"}')
    [first] = transport.frames("subscribed")
    await session.receive('{"type": "unsubscribe", "id": 2, "channel": "room:a"}')
    await apublish("room:a", "note", {"n": 1})
    await apublish("room:a", "note", {"n": 2})

    since = {"epoch": first["payload"]["epoch"], "offset": first["payload"]["offset"]}
    await session.receive(orjson.dumps({"type": "subscribe", "id": 3, "channel": "room:a", "since": since}))

    again = transport.frames("subscribed")[1]
    assert again["payload"] == {"channel": "room:a", "epoch": since["epoch"], "offset": since["offset"] + 2,
                                "recovered": True, "replayed": 2}
    assert [f["payload"] for f in transport.sent[-2:]] == [{"n": 1}, {"n": 2}]
    await session.end()


async def test_the_channel_cap_refuses_one_channel_more(user, settings, restore_registries):
    register_channel("room:", can_subscribe=lambda user, channel: True)
    _limits(settings, MAX_CHANNELS_PER_CONNECTION=3)  # the two own channels and one more
    transport = RecordingTransport()
    session = await _session(user, transport)

    await session.receive('{"type": "subscribe", "id": 1, "channel": "room:a"}')
    await session.receive('{"type": "subscribe", "id": 2, "channel": "room:b"}')

    assert transport.sent[-1] == {"type": "error", "reply_to": 2, "payload": {
        "code": "limit_exceeded", "message": "too many channels on this connection"}}
    assert "room:b" not in session.subscribed and "room:a" in session.subscribed
    await session.end()


async def test_too_many_invalid_frames_close_the_session_with_4008_once(user, settings):
    _limits(settings, MAX_INVALID_FRAMES=2)
    transport = RecordingTransport()
    session = await _session(user, transport)

    for _ in range(4):
        await session.receive("not json")

    assert [f["payload"]["code"] for f in transport.frames("error")] == ["invalid_json"] * 3
    assert transport.closed == [(4008, "too many invalid or oversized messages")]
    assert session.closing
    await session.end()


async def test_a_frame_over_the_size_limit_is_refused_and_counted_as_invalid(user, settings):
    _limits(settings, MAX_FRAME_BYTES=64)
    transport = RecordingTransport()
    session = await _session(user, transport)

    await session.receive('{"type": "ping", "id": "' + "x" * 64 + '"}')

    assert transport.sent[-1] == {"type": "error", "payload": {"code": "too_large",
                                                               "message": "frames are limited to 64 bytes"}}
    assert session.invalid_frames == 1
    await session.end()


async def test_the_command_rate_answers_rate_limited_then_closes_4029(user, settings):
    _limits(settings, COMMAND_RATE=0.001, COMMAND_BURST=2, RATE_LIMIT_STRIKES=2)
    transport = RecordingTransport()
    session = await _session(user, transport)

    for number in range(5):
        await session.receive(orjson.dumps({"type": "ping", "id": number}))

    assert [f["type"] for f in transport.sent[1:]] == ["pong", "pong", "error"]
    assert transport.sent[-1]["payload"]["code"] == "rate_limited"
    assert transport.closed == [(4029, f"rate limited; retry after {setting('RATE_LIMIT_RETRY_S')}s")]
    await session.end()
