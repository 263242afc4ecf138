"""realtime.fanout.control: one channel-layer channel per process, a group per user, routing to local sockets.

Real channel layers on the test Redis; two ``ControlPlane`` objects stand for two server processes.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import channel_layers

from realtime.fanout.control import ControlPlane, control_group


class Socket:
    """What the control plane needs of a connection: an id and ``control``."""

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self.received: list[dict] = []

    def control(self, message: dict) -> None:
        self.received.append(message)


async def until(predicate, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def planes():
    """Two processes' control planes, each with its own layer object and channel."""
    made = []

    async def make(*sockets: Socket) -> ControlPlane:
        plane = ControlPlane(channel_layers.make_backend("default"), {s.connection_id: s for s in sockets})
        await plane.start()
        made.append(plane)
        return plane

    yield make
    for plane in made:
        await plane.stop()


async def test_a_user_s_message_reaches_each_of_their_sockets_in_each_process_once(planes):
    a1, a2, b1 = Socket("a1"), Socket("a2"), Socket("b1")
    first, second = await planes(a1, a2), await planes(b1)
    await first.join("7", a1)
    await first.join("7", a2)
    await second.join("7", b1)

    await first.layer.group_send(control_group("7"), {"type": "rt.disconnect", "user_id": "7", "code": 4001})

    await until(lambda: a1.received and a2.received and b1.received)
    await asyncio.sleep(0.1)  # nothing more arrives
    assert [len(s.received) for s in (a1, a2, b1)] == [1, 1, 1]
    assert a1.received[0]["code"] == 4001


async def test_a_message_naming_a_connection_reaches_that_socket_only(planes):
    a1, a2 = Socket("a1"), Socket("a2")
    plane = await planes(a1, a2)
    await plane.join("7", a1)
    await plane.join("7", a2)

    await plane.layer.group_send(control_group("7"), {"type": "rt.disconnect", "user_id": "7",
                                                      "connection_id": "a2"})

    await until(lambda: a2.received)
    assert a1.received == []


async def test_the_process_leaves_the_group_with_the_user_s_last_socket(planes):
    a1, a2 = Socket("a1"), Socket("a2")
    plane = await planes(a1, a2)
    await plane.join("7", a1)
    await plane.join("7", a2)
    group_key = plane.layer._group_key(control_group("7"))  # channels_redis's sorted set of channels

    async def members() -> list[bytes]:
        connection = plane.layer.connection(plane.layer.consistent_hash(control_group("7")))
        return await connection.zrange(group_key, 0, -1)

    await plane.leave("7", a1)
    assert len(await members()) == 1  # a2 still there
    await plane.leave("7", a2)
    assert await members() == []
    assert "7" not in plane.users

    await plane.layer.group_send(control_group("7"), {"type": "rt.disconnect", "user_id": "7"})
    await asyncio.sleep(0.2)
    assert a1.received == a2.received == []


async def test_refresh_writes_the_memberships_again_after_the_group_keys_were_lost(planes):
    a1 = Socket("a1")
    plane = await planes(a1)
    await plane.join("8", a1)
    connection = plane.layer.connection(plane.layer.consistent_hash(control_group("8")))
    await connection.delete(plane.layer._group_key(control_group("8")))  # as a Redis restarted empty

    await plane.refresh()
    await plane.layer.group_send(control_group("8"), {"type": "rt.disconnect", "user_id": "8"})

    await until(lambda: a1.received)


async def test_concurrent_first_joins_of_many_users_each_reach_their_socket(planes):
    sockets = [Socket(f"s{n}") for n in range(50)]
    plane = await planes(*sockets)

    await asyncio.gather(*(plane.join(str(100 + n), s) for n, s in enumerate(sockets)))
    for n in range(50):
        await plane.layer.group_send(control_group(str(100 + n)), {"type": "rt.disconnect", "user_id": str(100 + n)})

    await until(lambda: all(s.received for s in sockets))
    assert all(len(s.received) == 1 for s in sockets)
