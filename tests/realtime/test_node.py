"""The node (realtime.fanout.node): one per event loop, started and stopped explicitly, running the
housekeeping jobs it is given (real Redis and channel layer)."""

from __future__ import annotations

import asyncio

import pytest

from realtime.core import rechecks
from realtime.fanout import housekeeping
from realtime.fanout.hub import get_hub
from realtime.fanout.node import Node, get_node

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_started_node_runs_its_hub_control_channel_and_housekeeping_until_stopped():
    node = Node()

    await node.start()
    tasks = (node.hub._reader, node.control._receiver, node._housekeeping)
    running = [not task.done() for task in tasks]
    channel = node.control_channel
    await node.stop()

    assert running == [True, True, True]
    assert channel.startswith("rtcontrol")
    assert all(task.done() for task in tasks)
    assert node.control is None and node.control_channel == ""
    assert node.hub._pubsub is None


async def test_a_stopped_node_starts_again_with_a_new_subscription():
    node = Node()
    await node.start()
    first_reader = node.hub._reader
    await node.stop()

    await node.start()
    second_reader = node.hub._reader
    await node.stop()

    assert first_reader is not second_reader and first_reader.done()
    assert node.hub._reader is None


async def test_each_event_loop_has_one_node_whose_hub_is_the_hub():
    first, again = await get_node(), await get_node()

    assert first is again
    assert await get_hub() is first.hub


async def test_the_node_runs_exactly_the_jobs_it_is_given(settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "HEARTBEAT_S": 0.1}  # a turn every 50 ms
    seen: list[Node] = []

    async def job(node: Node) -> None:
        seen.append(node)

    node = Node(jobs=(job,))
    await node.start()
    await asyncio.sleep(0.3)
    await node.stop()

    assert len(seen) >= 2 and set(map(id, seen)) == {id(node)}


def test_the_default_jobs_are_the_nodes_own_then_the_session_cores_rechecks():
    # The core's jobs are registered when Django starts (RealtimeConfig.ready), not imported by the node.
    assert Node().jobs == (housekeeping.sweep, housekeeping.refresh_registry,
                           rechecks.close_deactivated, rechecks.close_ended_sessions)
