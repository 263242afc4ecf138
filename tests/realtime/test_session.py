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
from realtime.core.session import RequestSession, Session
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


# ---------------------------------------------------------------------- request sessions (HTTP transports)


def _request_session(user, transport: RecordingTransport, expires_at=None) -> RequestSession:
    return RequestSession(transport, Identity(user, expires_at, "bearer"), ip="192.0.2.8", send=transport.send)


async def _eventually(condition, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.01)


async def test_a_request_session_follows_its_channels_with_their_catch_up_or_refusal(user, make_user):
    from realtime.publish import apublish

    node = await get_node()  # running already, as in a server that took a request before
    other = await sync_to_async(make_user)()
    first = await apublish(f"user:{user.pk}", "note", {"n": 1})
    await apublish(f"user:{user.pk}", "note", {"n": 2})
    transport = RecordingTransport()
    session = _request_session(user, transport)

    answers = await session.follow({f"user:{user.pk}": (first.epoch, 0), "broadcast": None,
                                    f"user:{other.pk}": None, "nosuch:1": None})

    mine = answers[f"user:{user.pk}"]
    assert (mine.epoch, mine.offset, mine.recovered) == (first.epoch, 2, True)
    assert [(offset, orjson.loads(text)["payload"]) for offset, text in mine.replay] == [(1, {"n": 1}), (2, {"n": 2})]
    assert answers["broadcast"].recovered is False
    assert (answers[f"user:{other.pk}"].code, answers["nosuch:1"].code) == ("forbidden", "not_found")
    assert list(answers) == [f"user:{user.pk}", "broadcast", f"user:{other.pk}", "nosuch:1"]  # the request's order
    # The codec writes the catch-up in its own format: the session wrote nothing itself.
    assert transport.sent == []
    assert session.subscribed == {f"user:{user.pk}", "broadcast"}
    assert session in node.hub.channels[f"user:{user.pk}"] and session in node.hub.channels["broadcast"]
    # Not a connection of the user: no registry entry, not in the hub's table that housekeeping sweeps.
    assert session not in node.hub.connections.values()
    assert await sync_to_async(registry.user_connection_count)(str(user.pk)) == 0
    await session.end()


async def test_a_request_session_holds_live_frames_until_released_and_skips_what_its_catch_up_covered(user):
    from realtime.publish import apublish

    channel = f"user:{user.pk}"
    transport = RecordingTransport()
    session = _request_session(user, transport)
    caught = (await session.follow({channel: None}))[channel]

    await apublish(channel, "note", {"n": "live"})
    await _eventually(lambda: len(session.held) == 1)
    session.deliver(channel, caught.offset, '{"covered": true}')  # as the hub may, after the read
    held_before_release = list(transport.sent)
    session.release({channel: caught.offset})

    assert held_before_release == []
    assert [(f["offset"], f["payload"]) for f in transport.sent] == [(caught.offset + 1, {"n": "live"})]
    assert session.held is None  # delivered at once from now on
    await session.end()


async def test_an_ended_request_session_leaves_its_channels_lingering_for_the_next_request(user):
    channel = f"user:{user.pk}"
    session = _request_session(user, RecordingTransport())
    await session.follow({channel: None})
    node = await get_node()

    await session.end()
    await session.end()  # idempotent

    subscribers = node.hub.channels[channel]  # the process stays subscribed to Redis
    assert session not in subscribers and len(subscribers) == 1
    assert session.subscribed == set() and session.identity is None


async def test_a_request_session_reuses_a_granted_permission_where_a_socket_session_asks_again(
        user, restore_registries):
    asked: list[str] = []

    async def can_subscribe(user, channel):
        asked.append(channel)
        return True

    register_channel("room:", can_subscribe=can_subscribe)
    http_room, socket_room = f"room:h{time.monotonic_ns()}", f"room:s{time.monotonic_ns()}"
    for _ in range(2):  # two polls, one after the other
        poller = _request_session(user, RecordingTransport())
        assert (await poller.follow({http_room: None}))[http_room].channel == http_room
        await poller.end()
    transport = RecordingTransport()
    socket = await _session(user, transport)
    for number in range(2):
        await socket.receive(orjson.dumps({"type": "subscribe", "id": number, "channel": socket_room}))
        await socket.receive(orjson.dumps({"type": "unsubscribe", "channel": socket_room}))

    assert asked == [http_room, socket_room, socket_room]
    assert [f["payload"]["channel"] for f in transport.frames("subscribed")] == [socket_room, socket_room]
    await socket.end()


async def test_a_follow_refuses_the_channels_beyond_the_channel_limit(user, settings, restore_registries):
    register_channel("room:", can_subscribe=lambda user, channel: True)
    _limits(settings, MAX_CHANNELS_PER_CONNECTION=2)
    session = _request_session(user, RecordingTransport())

    answers = await session.follow({"room:a": None, "room:b": None, "room:c": None})

    assert [answers["room:a"].channel, answers["room:b"].channel] == ["room:a", "room:b"]
    assert (answers["room:c"].code, answers["room:c"].message) == (
        "limit_exceeded", "too many channels on this connection")
    assert session.subscribed == {"room:a", "room:b"}
    await session.end()


async def test_a_request_session_closes_itself_when_its_credentials_expire(user):
    from datetime import UTC, datetime, timedelta

    transport = RecordingTransport()
    session = _request_session(user, transport, expires_at=datetime.now(UTC) + timedelta(seconds=0.3))
    await session.follow({"broadcast": None})

    session.close_when_expired()
    closed_at_once = list(transport.closed)
    await _eventually(lambda: transport.closed)

    assert closed_at_once == []
    assert transport.closed == [(4011, "token expired")]
    await session.end()


async def test_an_ended_request_session_is_freed_at_once_not_by_the_garbage_collector(user):
    """A long poller ends a request session every few seconds: a reference cycle would leave
    each one to the next collection, which walks every waiting client's objects."""
    import gc

    session = _request_session(user, RecordingTransport())
    await session.follow({"broadcast": None})
    gc.collect()
    gc.disable()
    try:
        await session.end()
        del session
        alive = [o for o in gc.get_objects() if type(o) is RequestSession]
    finally:
        gc.enable()

    assert alive == []
