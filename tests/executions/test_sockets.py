"""Executions over real sockets (the ASGI app in-process, real Redis, real database)."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from executions.models import Execution
from executions.services import (
    execution_create,
    execution_start,
    execution_update_progress,
    team_create,
    team_membership_add,
    team_membership_remove,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]


@pytest.fixture
def people(make_user):
    """A team with one member, and an outsider; the team has a running execution at 30%."""
    member = make_user(username="member")
    outsider = make_user(username="outsider")
    team = team_create(name="T", slug="t", owner=member)
    execution = execution_start(execution=execution_create(team=team))
    execution = execution_update_progress(execution=execution, progress=30, current_step="researching")
    return member, outsider, team, execution


async def _subscribe(sock, channel: str) -> dict:
    await sock.send({"type": "subscribe", "id": 1, "channel": channel})
    return await sock.recv()


@pytest.mark.parametrize("channel", ["team", "execution", "unknown-execution", "malformed-execution", "bad-team"])
async def test_non_members_are_forbidden_and_receive_nothing(connect, people, channel):  # noqa: F811
    member, outsider, team, execution = people
    name = {
        "team": f"team:{team.id}", "execution": f"execution:{execution.id}",
        "unknown-execution": f"execution:{uuid.uuid4()}", "malformed-execution": "execution:42",
        "bad-team": "team:abc",
    }[channel]
    _, sock, _ = await connect(outsider)

    error = await _subscribe(sock, name)
    await sync_to_async(execution_update_progress)(execution=execution, progress=60)

    assert error == {"type": "error", "reply_to": 1, "payload": {
        "code": "forbidden", "message": f"not allowed to subscribe to {name}"}}
    assert await sock.nothing()


async def test_a_member_subscribing_to_an_execution_gets_its_state_first(connect, people):  # noqa: F811
    member, _, _, execution = people
    _, sock, _ = await connect(member)

    subscribed = await _subscribe(sock, f"execution:{execution.id}")
    snapshot = await sock.recv()
    await sync_to_async(execution_update_progress)(execution=execution, progress=60, current_step="drafting")
    live = await sock.recv()

    assert (subscribed["type"], subscribed["payload"]["offset"]) == ("subscribed", 3)
    assert (snapshot["type"], snapshot["snapshot"], snapshot["offset"]) == ("execution_update", True, 3)
    assert {k: snapshot["payload"][k] for k in ("execution_id", "status", "progress", "current_step")} == {
        "execution_id": str(execution.id), "status": "running", "progress": 30, "current_step": "researching",
    }
    assert (live["offset"], live["payload"]["progress"], live["payload"]["current_step"]) == (4, 60, "drafting")


async def test_a_member_follows_a_demo_run_to_100_on_the_team_channel(connect, people):  # noqa: F811
    member, _, team, _ = people
    _, sock, _ = await connect(member)
    await _subscribe(sock, f"team:{team.id}")

    await sync_to_async(call_command)("run_demo_execution", "--team", team.slug, "--steps", "4", "--interval", "0")

    demo = await Execution.objects.exclude(current_step="researching").aget()
    updates = [(await sock.recv())["payload"] for _ in range(6)]
    assert [(u["execution_id"], u["status"], u["progress"]) for u in updates] == [
        (str(demo.id), "queued", 0), (str(demo.id), "running", 0), (str(demo.id), "running", 25),
        (str(demo.id), "running", 50), (str(demo.id), "running", 75), (str(demo.id), "completed", 100),
    ]
    assert await sock.nothing()


async def test_joining_a_team_subscribes_live_sockets_and_leaving_stops_them(connect, people, make_user):  # noqa: F811
    _, _, team, execution = people
    joiner = await sync_to_async(make_user)(username="joiner")
    _, sock, _ = await connect(joiner)

    await sync_to_async(team_membership_add)(team=team, user=joiner, role="member")
    subscribed = await sock.recv()
    await sync_to_async(execution_update_progress)(execution=execution, progress=40)
    # The join is announced on commit, like the subscription: whether the new member's own
    # socket is in the channel by then is a race, so its own join event may come first.
    update = await sock.recv_until(lambda frame: frame["type"] == "execution_update")
    await sync_to_async(team_membership_remove)(team=team, user=joiner)
    before_unsubscribe = []
    while (frame := await sock.recv())["type"] != "unsubscribed":
        before_unsubscribe.append(frame["type"])
    unsubscribed = frame
    await sync_to_async(execution_update_progress)(execution=execution, progress=50)

    assert (subscribed["type"], subscribed["payload"]["channel"]) == ("subscribed", f"team:{team.id}")
    assert (update["channel"], update["payload"]["progress"]) == (f"team:{team.id}", 40)
    # Its own departure may or may not reach it before it leaves the channel: both go out on commit.
    assert before_unsubscribe in ([], ["team_member_left"])
    assert unsubscribed == {"type": "unsubscribed", "payload": {"channel": f"team:{team.id}"}}
    assert await sock.nothing()


async def test_a_member_cancels_over_the_socket_and_sees_the_update(connect, people):  # noqa: F811
    member, _, team, execution = people
    _, sock, _ = await connect(member)
    await _subscribe(sock, f"team:{team.id}")

    await sock.send({"type": "command", "id": 9, "payload": {
        "name": "execution.cancel", "args": {"execution_id": str(execution.id)}}})
    frames = [await sock.recv(), await sock.recv()]

    by_type = {f["type"]: f for f in frames}
    assert by_type["command_result"]["reply_to"] == 9
    assert by_type["command_result"]["payload"]["result"]["execution"]["error"] == "cancelled by member"
    assert (by_type["execution_update"]["payload"]["status"], by_type["execution_update"]["payload"]["error"]) == (
        "failed", "cancelled by member"
    )


async def test_an_outsider_cancelling_over_the_socket_gets_not_found(connect, people):  # noqa: F811
    _, outsider, _, execution = people
    _, sock, _ = await connect(outsider)

    await sock.send({"type": "command", "id": 9, "payload": {
        "name": "execution.cancel", "args": {"execution_id": str(execution.id)}}})

    assert await sock.recv() == {"type": "error", "reply_to": 9, "payload": {
        "code": "not_found", "message": "no such execution"}}
    assert (await Execution.objects.aget(pk=execution.pk)).status == "running"
