"""The ``execution.cancel`` socket command."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async

from executions.models import Execution
from executions.services import execution_complete, execution_create, execution_start, team_create
from realtime.core.commands import run_command
from realtime.schemas import ProtocolError

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]


@pytest.fixture
def people(make_user):
    """A member of a team with a running execution, and an outsider."""
    member = make_user(username="member")
    outsider = make_user(username="outsider")
    team = team_create(name="T", slug="t", owner=member)
    execution = execution_start(execution=execution_create(team=team))
    return member, outsider, execution


async def test_a_member_cancels_a_running_execution(people):
    member, _, execution = people

    answer = await run_command(member, "execution.cancel", {"execution_id": str(execution.id)})

    assert (answer["execution"]["execution_id"], answer["execution"]["status"], answer["execution"]["error"]) == (
        str(execution.id), "failed", "cancelled by member"
    )
    stored = await Execution.objects.aget(pk=execution.pk)
    assert (stored.status, stored.error) == ("failed", "cancelled by member")


async def test_outsiders_and_unknown_ids_get_the_same_not_found(people):
    _, outsider, execution = people

    with pytest.raises(ProtocolError) as stranger:
        await run_command(outsider, "execution.cancel", {"execution_id": str(execution.id)})
    with pytest.raises(ProtocolError) as unknown:
        await run_command(outsider, "execution.cancel", {"execution_id": str(uuid.uuid4())})

    assert (stranger.value.code, stranger.value.message) == ("not_found", "no such execution")
    assert (unknown.value.code, unknown.value.message) == ("not_found", "no such execution")
    assert (await Execution.objects.aget(pk=execution.pk)).status == "running"


async def test_cancelling_an_ended_execution_is_invalid_state(people):
    member, _, execution = people
    await sync_to_async(execution_complete)(execution=execution)

    with pytest.raises(ProtocolError) as refused:
        await run_command(member, "execution.cancel", {"execution_id": str(execution.id)})

    assert refused.value.code == "invalid_state"
    assert "already ended (completed)" in refused.value.message


@pytest.mark.parametrize("args", [{}, {"execution_id": 5}, {"id": "x"}])
async def test_missing_or_mistyped_execution_id_is_an_invalid_message(people, args):
    member, _, _ = people

    with pytest.raises(ProtocolError) as refused:
        await run_command(member, "execution.cancel", args)

    assert refused.value.code == "invalid_message"


async def test_a_malformed_execution_id_is_not_found(people):
    member, _, _ = people

    with pytest.raises(ProtocolError) as refused:
        await run_command(member, "execution.cancel", {"execution_id": "nope"})

    assert refused.value.code == "not_found"
