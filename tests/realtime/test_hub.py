"""The process-local hub and the per-socket outbox: gap filling, slow sockets, coalescing."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from realtime.fanout.hub import Outbox, audience_allows
from realtime.publish import _prepare, publish_rollback_unsafe
from realtime.storage import redis as rt_redis
from realtime.storage import streams

publish = sync_to_async(publish_rollback_unsafe)


@pytest.mark.django_db(transaction=True)
async def test_messages_published_while_the_hub_subscription_is_down_are_recovered(connect, user):
    _, sock, _ = await connect(user)
    await publish("broadcast", "system_event", {"n": 0})
    assert (await sock.recv())["payload"] == {"n": 0}

    # Cut every pub/sub connection (the hub's) and publish in the same transaction, so all
    # 20 messages are published before the hub can possibly have re-subscribed.
    pipe = rt_redis.sync_client().pipeline(transaction=True)
    pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    script = rt_redis.sync_script(streams.PUBLISH_LUA)
    for n in range(1, 21):
        script(*_prepare("broadcast", "system_event", {"n": n}, "system", None, ()), client=pipe)
    killed = (await sync_to_async(pipe.execute)())[0]

    received = [(await sock.recv(5))["payload"]["n"] for _ in range(20)]
    assert killed >= 1
    assert received == list(range(1, 21))  # from history, in order, none lost, none twice
    assert await sock.nothing(0.5)


class StalledSocket:
    """An ASGI send that accepts frames until ``stall()``, then blocks like a full transport."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.writable = asyncio.Event()
        self.writable.set()

    async def send(self, message: dict) -> None:
        await self.writable.wait()
        self.sent.append(message["text"])


async def test_outbox_writes_through_while_the_socket_keeps_up():
    socket = StalledSocket()
    outbox = Outbox(socket.send, limit=1000, on_overflow=lambda: None)

    outbox.push("a")
    outbox.push("b")

    assert socket.sent == ["a", "b"]  # written synchronously, no task involved
    assert outbox.queued_bytes == 0


async def test_outbox_queues_in_order_and_drains_when_the_socket_recovers():
    socket = StalledSocket()
    outbox = Outbox(socket.send, limit=1000, on_overflow=lambda: None)
    socket.writable.clear()

    for text in ("1", "2", "3"):
        outbox.push(text)
    assert socket.sent == [] and outbox.queued_bytes == 2  # "1" is in flight, "2" and "3" queued
    socket.writable.set()
    await asyncio.sleep(0.01)

    assert socket.sent == ["1", "2", "3"]
    assert outbox.queued_bytes == 0


async def test_outbox_closes_a_slow_consumer_at_its_byte_limit():
    socket = StalledSocket()
    overflowed = []
    outbox = Outbox(socket.send, limit=10, on_overflow=lambda: overflowed.append(True))
    socket.writable.clear()

    outbox.push("first")
    for _ in range(3):
        outbox.push("12345")

    assert overflowed == [True]
    assert outbox.closed and outbox.queued_bytes == 0


async def test_outbox_coalesces_latest_state_messages_but_never_others():
    socket = StalledSocket()
    outbox = Outbox(socket.send, limit=1000, on_overflow=lambda: None)
    socket.writable.clear()

    outbox.push("in flight")
    outbox.push("progress 10", b"execution:1")
    outbox.push("notification A")
    outbox.push("progress 20", b"execution:1")
    outbox.push("progress 5 of another", b"execution:2")
    outbox.push("progress 30", b"execution:1")
    outbox.push("notification B")
    socket.writable.set()
    await asyncio.sleep(0.01)

    assert socket.sent == ["in flight", "notification A", "progress 5 of another", "progress 30", "notification B"]
    assert outbox.coalesced == 2


async def test_outbox_holds_no_queue_while_idle_and_orders_and_coalesces_again_after_draining():
    socket = StalledSocket()
    outbox = Outbox(socket.send, limit=1000, on_overflow=lambda: None)
    outbox.push("welcome")
    assert outbox._queue is None and outbox._keyed is None  # written through: nothing allocated

    for round_ in (1, 2):  # the second stall meets an outbox that already drained once
        socket.writable.clear()
        outbox.push(f"in flight {round_}")
        outbox.push("progress 10", b"execution:1")
        outbox.push(f"notification {round_}")
        outbox.push("progress 20", b"execution:1")
        assert outbox._queue is not None
        socket.writable.set()
        await asyncio.sleep(0.01)
        assert socket.sent[-3:] == [f"in flight {round_}", f"notification {round_}", "progress 20"]
        assert outbox._queue is None and outbox._keyed is None and outbox.queued_bytes == 0

    assert outbox.coalesced == 2
    outbox.close()
    outbox.push("after close")
    assert socket.sent[-1] == "progress 20"


class _Follower:
    """What the hub needs of a connection, with a stalled transport."""

    def __init__(self, socket: StalledSocket) -> None:
        self.connection_id = "c1"
        self.user_key = b"1"
        self.held = None
        self.subscribed: set[str] = set()
        self.outbox = Outbox(socket.send, limit=100_000, on_overflow=lambda: None)


async def test_coalescing_keeps_the_latest_state_of_every_channel_a_socket_follows():
    # An execution update goes to team:7 and execution:3 with the same coalesce key; a lagging
    # socket that follows both channels must end on "completed" in each of them.
    from realtime.fanout.hub import Hub

    hub, socket = Hub(), StalledSocket()
    follower = _Follower(socket)
    hub.channels = {"team:7": {follower: None}, "execution:3": {follower: None}}
    socket.writable.clear()
    follower.outbox.push("in flight")
    for offset, status in enumerate(("running", "running 50%", "completed"), start=1):
        for channel in ("team:7", "execution:3"):
            hub.dispatch(channel, b"%d\te1\t\texecution:3\t%s %s" % (offset, channel.encode(), status.encode()))
    socket.writable.set()
    await asyncio.sleep(0.01)

    assert socket.sent == ["in flight", "team:7 completed", "execution:3 completed"]
    assert follower.outbox.coalesced == 4


@pytest.mark.parametrize(("audience", "user", "allowed"), [
    (b"", b"1", True),
    (b"-1,2", b"1", False),
    (b"-1,2", b"3", True),
    (b"-12", b"1", True),
    (b"+3,4", b"4", True),
    (b"+3,4", b"34", False),
])
def test_audience_rules(audience, user, allowed):
    assert audience_allows(audience, user) is allowed


@pytest.mark.django_db(transaction=True)
async def test_a_closed_socket_leaves_its_channels_and_only_its_own(connect, make_user):
    from realtime.fanout.hub import get_hub

    first_user = await sync_to_async(make_user)()
    second_user = await sync_to_async(make_user)()
    _, first, _ = await connect(first_user)
    _, second, _ = await connect(second_user)
    hub = await get_hub()
    [first_conn] = [c for c in hub.connections.values() if c.identity.user_id == str(first_user.pk)]

    await first.close()  # returns once the consumer is done

    assert first_conn.connection_id not in hub.connections
    assert f"user:{first_user.pk}" not in hub.channels
    assert first_conn not in hub.channels["broadcast"]
    assert len(hub.channels["broadcast"]) == 1
    assert f"user:{second_user.pk}" in hub.channels
