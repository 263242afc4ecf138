"""Transition and progress rules of executions.services."""

from __future__ import annotations

import pytest

from executions.models import Execution, TeamMembership
from executions.services import (
    ExecutionPermissionError,
    ExecutionTransitionError,
    ExecutionValueError,
    execution_cancel,
    execution_complete,
    execution_create,
    execution_fail,
    execution_report,
    execution_start,
    execution_update_progress,
    team_membership_add,
    team_membership_remove,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(team, member):
    """A queued execution of ``team`` created by ``member``."""
    return execution_create(team=team, created_by=member)


@pytest.fixture
def running(queued):
    """A running execution of ``team``."""
    return execution_start(execution=queued)


def _reload(execution: Execution) -> Execution:
    return Execution.objects.get(pk=execution.pk)


def test_create_makes_a_queued_execution_at_zero(team, member):
    execution = execution_create(team=team, created_by=member)

    stored = _reload(execution)
    assert (stored.status, stored.progress, stored.current_step, stored.result, stored.error) == (
        "queued", 0, "", None, ""
    )
    assert stored.created_by == member
    assert stored.started_at is None and stored.finished_at is None


def test_start_moves_queued_to_running_and_records_when(queued):
    execution = execution_start(execution=queued)

    assert execution.status == "running"
    assert _reload(execution).started_at is not None


@pytest.mark.parametrize("end", ["complete", "fail"])
def test_start_is_refused_on_running_and_ended_executions(running, end):
    with pytest.raises(ExecutionTransitionError, match="cannot start an execution that is running"):
        execution_start(execution=running)
    if end == "complete":
        execution_complete(execution=running)
    else:
        execution_fail(execution=running, error="boom")

    with pytest.raises(ExecutionTransitionError, match="only a queued one"):
        execution_start(execution=running)
    assert _reload(running).status == ("completed" if end == "complete" else "failed")


def test_progress_is_refused_while_queued(queued):
    with pytest.raises(ExecutionTransitionError, match="only of a running one"):
        execution_update_progress(execution=queued, progress=10)

    assert _reload(queued).progress == 0


def test_progress_and_step_are_recorded_while_running(running):
    execution = execution_update_progress(execution=running, progress=30, current_step="researching")

    stored = _reload(execution)
    assert (stored.status, stored.progress, stored.current_step) == ("running", 30, "researching")


def test_progress_without_a_step_keeps_the_current_step(running):
    execution_update_progress(execution=running, progress=30, current_step="researching")

    execution_update_progress(execution=running, progress=40)

    assert (_reload(running).progress, _reload(running).current_step) == (40, "researching")


def test_progress_may_repeat_with_a_new_step(running):
    execution_update_progress(execution=running, progress=30, current_step="a")

    execution_update_progress(execution=running, progress=30, current_step="b")

    assert (_reload(running).progress, _reload(running).current_step) == (30, "b")


def test_progress_never_goes_down(running):
    execution_update_progress(execution=running, progress=50)

    with pytest.raises(ExecutionValueError, match="progress cannot go down: it is 50, got 49"):
        execution_update_progress(execution=running, progress=49)

    assert _reload(running).progress == 50


@pytest.mark.parametrize("progress", [-1, 101, 1000])
def test_progress_outside_0_to_100_is_refused(running, progress):
    with pytest.raises(ExecutionValueError, match=f"progress must be within 0..100, got {progress}"):
        execution_update_progress(execution=running, progress=progress)


@pytest.mark.parametrize("progress", [True, 1.5, "10", None])
def test_progress_must_be_an_integer(running, progress):
    with pytest.raises(ExecutionValueError, match="progress must be an integer"):
        execution_update_progress(execution=running, progress=progress)


@pytest.mark.parametrize("progress", [0, 100])
def test_progress_bounds_are_accepted(running, progress):
    execution_update_progress(execution=running, progress=progress, current_step="edge")

    assert _reload(running).progress == progress


def test_complete_sets_progress_to_100_and_stores_the_result(running):
    execution_update_progress(execution=running, progress=40)

    execution = execution_complete(execution=running, result={"answer": 42})

    stored = _reload(execution)
    assert (stored.status, stored.progress, stored.result) == ("completed", 100, {"answer": 42})
    assert stored.finished_at is not None


def test_complete_is_refused_on_a_queued_execution(queued):
    with pytest.raises(ExecutionTransitionError, match="cannot complete an execution that is queued"):
        execution_complete(execution=queued)


def test_fail_from_queued_and_from_running_keeps_the_progress(queued, team):
    execution_fail(execution=queued, error="no runner available")
    other = execution_start(execution=execution_create(team=team))
    execution_update_progress(execution=other, progress=60)

    execution_fail(execution=other, error="model timeout")

    assert (_reload(queued).status, _reload(queued).error, _reload(queued).progress) == (
        "failed", "no runner available", 0
    )
    assert (_reload(other).status, _reload(other).error, _reload(other).progress) == ("failed", "model timeout", 60)
    assert _reload(other).finished_at is not None


@pytest.mark.parametrize("error", ["", "   "])
def test_fail_needs_an_error_message(running, error):
    with pytest.raises(ExecutionValueError, match="non-empty error message"):
        execution_fail(execution=running, error=error)

    assert _reload(running).status == "running"


@pytest.mark.parametrize("end", ["complete", "fail"])
def test_nothing_leaves_a_terminal_state(running, member, end):
    if end == "complete":
        execution_complete(execution=running, result=1)
    else:
        execution_fail(execution=running, error="boom")
    before = _reload(running)

    with pytest.raises(ExecutionTransitionError):
        execution_start(execution=running)
    with pytest.raises(ExecutionTransitionError):
        execution_update_progress(execution=running, progress=100)
    with pytest.raises(ExecutionTransitionError):
        execution_complete(execution=running)
    with pytest.raises(ExecutionTransitionError):
        execution_fail(execution=running, error="again")
    with pytest.raises(ExecutionTransitionError):
        execution_cancel(execution=running, user=member)

    after = _reload(running)
    assert (after.status, after.progress, after.result, after.error, after.updated_at) == (
        before.status, before.progress, before.result, before.error, before.updated_at
    )


def test_rules_are_checked_against_the_stored_state_not_a_stale_instance(running):
    stale = Execution.objects.get(pk=running.pk)
    execution_complete(execution=running)

    with pytest.raises(ExecutionTransitionError, match="cannot report progress of an execution that is completed"):
        execution_update_progress(execution=stale, progress=50)


def test_cancel_by_a_member_fails_the_execution_with_their_name(running, member):
    execution = execution_cancel(execution=running, user=member)

    assert (execution.status, execution.error) == ("failed", "cancelled by member")


def test_cancel_of_a_queued_execution_is_allowed(queued, member):
    assert execution_cancel(execution=queued, user=member).status == "failed"


def test_cancel_by_a_non_member_is_refused(running, outsider):
    with pytest.raises(ExecutionPermissionError):
        execution_cancel(execution=running, user=outsider)

    assert _reload(running).status == "running"


def test_report_starts_reports_progress_and_completes_in_one_call(queued):
    execution_report(execution=queued, status="running", progress=20, current_step="plan")
    execution = execution_report(execution=queued, status="completed", progress=90, result=["done"])

    stored = _reload(execution)
    assert (stored.status, stored.progress, stored.current_step, stored.result) == (
        "completed", 100, "plan", ["done"]
    )


def test_report_running_on_a_running_execution_changes_nothing(running):
    execution = execution_report(execution=running, status="running")

    assert (execution.status, execution.progress) == ("running", 0)


def test_report_is_all_or_nothing(running):
    execution_update_progress(execution=running, progress=50, current_step="half")

    with pytest.raises(ExecutionValueError):
        execution_report(execution=running, progress=10, status="completed")

    stored = _reload(running)
    assert (stored.status, stored.progress, stored.current_step) == ("running", 50, "half")


def test_report_refuses_queued_as_a_status(running):
    with pytest.raises(ExecutionValueError, match="not 'queued'"):
        execution_report(execution=running, status="queued")


def test_membership_add_is_idempotent_and_updates_the_role(team, make_user):
    newcomer = make_user()

    team_membership_add(team=team, user=newcomer, role="member")
    team_membership_add(team=team, user=newcomer, role="owner")

    assert list(TeamMembership.objects.filter(team=team, user=newcomer).values_list("role", flat=True)) == ["owner"]


def test_membership_add_refuses_an_unknown_role(team, make_user):
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        team_membership_add(team=team, user=make_user(), role="admin")


def test_membership_remove_reports_whether_the_user_was_a_member(team, member, outsider):
    assert team_membership_remove(team=team, user=outsider) is False
    assert team_membership_remove(team=team, user=member) is True
    assert TeamMembership.objects.filter(team=team).count() == 0
