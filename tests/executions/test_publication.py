"""Every execution change is published after commit to team:<id> and execution:<id>, and never on rollback."""

from __future__ import annotations

import re

import pytest
from django.db import transaction

from executions.services import (
    ExecutionValueError,
    execution_cancel,
    execution_complete,
    execution_create,
    execution_fail,
    execution_start,
    execution_update_progress,
)
from tests.executions.conftest import published, published_payloads

pytestmark = pytest.mark.django_db(transaction=True)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Boom(Exception):
    """Raised to roll a transaction back."""


def test_each_change_is_published_to_both_channels_in_order(team, member):
    execution = execution_create(team=team, created_by=member)
    execution_start(execution=execution)
    execution_update_progress(execution=execution, progress=40, current_step="researching")
    execution_complete(execution=execution, result={"summary": "ok"})

    team_updates = published_payloads(f"team:{team.id}")
    execution_updates = published_payloads(f"execution:{execution.id}")
    assert team_updates == execution_updates
    assert [(u["status"], u["progress"], u["current_step"], u["result"], u["error"]) for u in team_updates] == [
        ("queued", 0, None, None, None),
        ("running", 0, None, None, None),
        ("running", 40, "researching", None, None),
        ("completed", 100, "researching", {"summary": "ok"}, None),
    ]
    assert {(u["execution_id"], u["team_id"]) for u in team_updates} == {(str(execution.id), str(team.id))}
    assert all(ISO_Z.match(u["updated_at"]) for u in team_updates)


def test_the_envelope_is_an_execution_update_of_the_system(team):
    execution = execution_create(team=team)

    [envelope] = published(f"execution:{execution.id}")
    assert (envelope["type"], envelope["channel"], envelope["offset"], envelope["sender"]) == (
        "execution_update", f"execution:{execution.id}", 1, "system"
    )


def test_failure_and_cancel_publish_the_error(team, member):
    failed = execution_start(execution=execution_create(team=team))
    cancelled = execution_create(team=team)

    execution_fail(execution=failed, error="model timeout")
    execution_cancel(execution=cancelled, user=member)

    assert published_payloads(f"execution:{failed.id}")[-1]["error"] == "model timeout"
    last = published_payloads(f"execution:{cancelled.id}")[-1]
    assert (last["status"], last["error"]) == ("failed", "cancelled by member")


def test_nothing_is_published_before_commit(team):
    execution = execution_start(execution=execution_create(team=team))
    before = len(published(f"team:{team.id}"))

    with transaction.atomic():
        execution_update_progress(execution=execution, progress=10)
        assert len(published(f"team:{team.id}")) == before

    assert len(published(f"team:{team.id}")) == before + 1
    assert published_payloads(f"execution:{execution.id}")[-1]["progress"] == 10


def test_nothing_is_published_when_the_transaction_rolls_back(team):
    execution = execution_start(execution=execution_create(team=team))
    team_before = published(f"team:{team.id}")
    execution_before = published(f"execution:{execution.id}")

    with pytest.raises(Boom), transaction.atomic():
        execution_update_progress(execution=execution, progress=10)
        execution_complete(execution=execution)
        raise Boom

    assert published(f"team:{team.id}") == team_before
    assert published(f"execution:{execution.id}") == execution_before


def test_a_created_execution_that_rolls_back_is_never_announced(team):
    with pytest.raises(Boom), transaction.atomic():
        execution_create(team=team)
        raise Boom

    assert published_payloads(f"team:{team.id}") == []


def test_a_refused_change_publishes_nothing(team):
    execution = execution_start(execution=execution_create(team=team))
    execution_update_progress(execution=execution, progress=50)
    before = published(f"team:{team.id}")

    with pytest.raises(ExecutionValueError):
        execution_update_progress(execution=execution, progress=20)

    assert published(f"team:{team.id}") == before


def test_repeating_the_current_state_publishes_nothing(team):
    execution = execution_start(execution=execution_create(team=team))
    execution_update_progress(execution=execution, progress=50, current_step="half")
    before = published(f"team:{team.id}")

    execution_update_progress(execution=execution, progress=50)

    assert published(f"team:{team.id}") == before
