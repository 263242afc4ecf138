"""Policies of the team: and execution: namespaces, the execution snapshot, and membership control messages."""

from __future__ import annotations

import asyncio
import inspect
import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer

from executions.events import execution_update_payload
from executions.services import (
    execution_create,
    execution_fail,
    execution_start,
    execution_update_progress,
    team_membership_add,
    team_membership_remove,
)
from realtime.core.channels import call_check, policy_for
from realtime.fanout.control import control_group

pytestmark = pytest.mark.django_db


def _can_subscribe(user, channel: str) -> bool:
    check = policy_for(channel).can_subscribe
    return async_to_sync(check)(user, channel) if inspect.iscoroutinefunction(check) else check(user, channel)


# The team check runs on the event loop's own connection on PostgreSQL: it sees committed rows only.
@pytest.mark.django_db(transaction=True)
def test_team_channel_is_open_to_members_only(team, member, outsider, make_team):
    other_team = make_team(outsider)

    assert _can_subscribe(member, f"team:{team.id}") is True
    assert _can_subscribe(outsider, f"team:{team.id}") is False
    assert _can_subscribe(member, f"team:{other_team.id}") is False


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("suffix", ["abc", "1.5", "-1", "999999", "0x1", "1 ", "99999999999999999999999"])
def test_team_channel_refuses_malformed_and_unknown_ids(member, team, suffix):
    assert _can_subscribe(member, f"team:{suffix}") is False


def test_execution_channel_is_open_to_members_of_its_team_only(team, member, outsider):
    execution = execution_create(team=team)

    assert _can_subscribe(member, f"execution:{execution.id}") is True
    assert _can_subscribe(outsider, f"execution:{execution.id}") is False


@pytest.mark.parametrize("make_suffix", [
    lambda e: "not-a-uuid",
    lambda e: "123",
    lambda e: str(uuid.uuid4()),
    lambda e: str(e.id).upper(),
    lambda e: e.id.hex,
])
def test_execution_channel_refuses_malformed_unknown_and_non_canonical_ids(team, member, make_suffix):
    execution = execution_create(team=team)

    assert _can_subscribe(member, f"execution:{make_suffix(execution)}") is False


@pytest.mark.django_db(transaction=True)
def test_anonymous_users_may_subscribe_to_nothing(team):
    from django.contrib.auth.models import AnonymousUser

    execution = execution_create(team=team)

    assert _can_subscribe(AnonymousUser(), f"team:{team.id}") is False
    assert _can_subscribe(AnonymousUser(), f"execution:{execution.id}") is False


def test_snapshot_is_the_current_state_for_a_member(team, member):
    execution = execution_start(execution=execution_create(team=team))
    execution = execution_update_progress(execution=execution, progress=70, current_step="drafting")
    channel = f"execution:{execution.id}"

    message_type, payload = policy_for(channel).snapshot(member, channel)

    assert message_type == "execution_update"
    assert payload == execution_update_payload(execution=execution)
    assert (payload["status"], payload["progress"], payload["current_step"]) == ("running", 70, "drafting")


def test_snapshot_of_an_ended_execution_carries_its_error(team, member):
    execution = execution_fail(execution=execution_create(team=team), error="boom")
    channel = f"execution:{execution.id}"

    assert policy_for(channel).snapshot(member, channel)[1]["error"] == "boom"


def test_snapshot_is_none_for_outsiders_and_bad_ids(team, outsider, member):
    execution = execution_create(team=team)
    snapshot = policy_for("execution:x").snapshot

    assert snapshot(outsider, f"execution:{execution.id}") is None
    assert snapshot(member, "execution:nope") is None
    assert snapshot(member, f"execution:{uuid.uuid4()}") is None


def test_team_channel_has_no_snapshot_and_no_client_publishing():
    policy = policy_for("team:1")

    assert (policy.snapshot, policy.can_publish) == (None, None)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_checks_run_through_the_transport_in_the_database_thread(make_user):
    member = await sync_to_async(make_user)(username="m")
    outsider = await sync_to_async(make_user)(username="o")
    team = await sync_to_async(_team_with)(member)
    execution = await sync_to_async(execution_create)(team=team)
    channel = f"execution:{execution.id}"

    assert await call_check(policy_for(channel).can_subscribe, member, channel) is True
    assert await call_check(policy_for(channel).can_subscribe, outsider, channel) is False
    assert (await call_check(policy_for(channel).snapshot, member, channel))[1]["status"] == "queued"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_joining_and_leaving_a_team_moves_live_connections(make_user):
    member = await sync_to_async(make_user)(username="m")
    joiner = await sync_to_async(make_user)(username="j")
    team = await sync_to_async(_team_with)(member)
    running = await sync_to_async(lambda: execution_start(execution=execution_create(team=team)))()
    ended = await sync_to_async(lambda: execution_fail(execution=execution_create(team=team), error="x"))()
    layer = get_channel_layer()
    connection = await layer.new_channel()
    await layer.group_add(control_group(joiner.pk), connection)

    await sync_to_async(team_membership_add)(team=team, user=joiner, role="member")
    joined = await layer.receive(connection)
    await sync_to_async(team_membership_remove)(team=team, user=joiner)
    left = [await layer.receive(connection), await layer.receive(connection)]

    user_id = str(joiner.pk)
    assert joined == {"type": "rt.subscribe", "channel": f"team:{team.id}", "user_id": user_id}
    # Active executions' channels are left too; the ended one will never publish again.
    assert left == [
        {"type": "rt.unsubscribe", "channel": f"team:{team.id}", "user_id": user_id},
        {"type": "rt.unsubscribe", "channel": f"execution:{running.id}", "user_id": user_id},
    ]
    assert f"execution:{ended.id}" not in str(left)


@pytest.mark.django_db(transaction=True)
async def test_team_checks_made_at_the_same_moment_share_one_query(make_user, monkeypatch):
    from executions import channels as execution_channels

    users = [await sync_to_async(make_user)(username=f"u{n}") for n in range(6)]
    teams = [await sync_to_async(_team_with)(users[0]), await sync_to_async(_team_with)(users[1])]
    await sync_to_async(team_membership_add)(team=teams[0], user=users[2])
    queries = []
    real_fetch = execution_channels.fetch_rows

    async def counted(db, sql):
        queries.append(db)
        return await real_fetch(db, sql)

    monkeypatch.setattr(execution_channels, "fetch_rows", counted)
    asks = [(user, f"team:{team.id}") for user in users for team in teams] + [(users[0], "team:999999")]

    answers = await asyncio.gather(*(call_check(policy_for(c).can_subscribe, u, c) for u, c in asks))

    members = {(users[0].pk, teams[0].id), (users[2].pk, teams[0].id), (users[1].pk, teams[1].id)}
    assert answers == [(u.pk, int(c.split(":")[1])) in members for u, c in asks]
    assert sum(answers) == 3
    assert len(queries) == 1


def _team_with(owner):
    from executions.services import team_create

    return team_create(name="T", slug=f"t-{owner.pk}", owner=owner)
