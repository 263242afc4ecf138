"""Writes of the executions app: the only code that changes teams, memberships and executions.

Every function runs in one transaction. Execution changes lock the row (``select_for_update``)
so that concurrent updates of one execution are applied one after the other and each checks
its rule against the state the previous one committed. Each change queues an
``execution_update`` for ``team:<team_id>`` and ``execution:<execution_id>``, sent only if the
transaction commits.

The life of an execution::

    queued --start--> running --progress*--> running --complete--> completed
       \\                  \\
        +------fail--------+----fail / cancel---------------------> failed

Decisions: progress is accepted only while running (a runner reports ``start`` first, so a
queued execution never shows progress it has not begun); progress never goes down within a
run but may repeat (a new step at the same percentage); ``complete`` sets progress to 100;
``fail`` and ``cancel`` keep the progress reached, which tells how far the run got.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from executions.events import (
    TEAM_MEMBER_JOINED,
    TEAM_MEMBER_LEFT,
    TEAM_MEMBER_ROLE_CHANGED,
    TEAM_RENAMED,
    execution_channel,
    execution_update_publish_on_commit,
    team_channel,
    team_event_publish_on_commit,
    team_member_payload,
)
from executions.models import Execution, Team, TeamMembership
from executions.selectors import team_membership_exists
from realtime.publish import subscribe_user_on_commit, unsubscribe_user_on_commit

ACTIVE_STATUSES = (Execution.Status.QUEUED, Execution.Status.RUNNING)


class ExecutionError(ValueError):
    """A change that the rules of executions refuse."""


class ExecutionTransitionError(ExecutionError):
    """The execution's current status does not allow this change (e.g. it already ended)."""


class ExecutionValueError(ExecutionError):
    """A value outside what the rules accept (e.g. progress outside 0..100, or going down)."""


class ExecutionCancelledError(ExecutionTransitionError):
    """A runner reported on an execution that a member or staff cancelled: the engine should stop it."""


class ExecutionConflictError(ExecutionError):
    """Another execution of the team already has this external id."""


class ExecutionPermissionError(PermissionError):
    """The user may not act on this execution (not a member of its team)."""


# ------------------------------------------------------------------ teams


@transaction.atomic
def team_create(*, name: str, slug: str, owner: Any = None) -> Team:
    """Create a team; its ``owner``, when given, becomes its first member with the owner role."""
    team = Team.objects.create(name=name, slug=slug)
    if owner is not None:
        team_membership_add(team=team, user=owner, role=TeamMembership.Role.OWNER)
    return team


@transaction.atomic
def team_membership_add(*, team: Team, user: Any, role: str = TeamMembership.Role.MEMBER) -> TeamMembership:
    """Make a user a member of a team (or change the role of an existing member).

    After commit the user's live connections join ``team:<id>``, so a new member sees the
    team's next update without reconnecting, and the team hears ``team_member_joined`` (or
    ``team_member_role_changed``; nothing when the role is the same).
    """
    if role not in TeamMembership.Role.values:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(TeamMembership.Role.values)}")
    membership = TeamMembership.objects.select_for_update().filter(team=team, user=user).first()
    if membership is None:
        membership = TeamMembership.objects.create(team=team, user=user, role=role)
        subscribe_user_on_commit(user.pk, team_channel(team.pk))
        team_event_publish_on_commit(
            team_id=team.pk, event_type=TEAM_MEMBER_JOINED, payload=team_member_payload(team_id=team.pk, user=user,
                                                                                         role=role),
        )
    elif membership.role != role:
        previous_role = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        team_event_publish_on_commit(
            team_id=team.pk, event_type=TEAM_MEMBER_ROLE_CHANGED,
            payload={**team_member_payload(team_id=team.pk, user=user, role=role), "previous_role": previous_role},
        )
    return membership


@transaction.atomic
def team_membership_remove(*, team: Team, user: Any) -> bool:
    """Remove a user from a team; returns whether they were a member.

    After commit the team hears ``team_member_left``, and the user's live connections leave
    ``team:<id>`` and the ``execution:<id>`` channels of the team's executions that are still
    queued or running. Channels of ended executions are left alone: no update is ever
    published to them again, so staying there shows nothing new, and listing every past
    execution of the team would not scale.
    """
    membership = TeamMembership.objects.select_for_update().filter(team=team, user=user).first()
    if membership is None:
        return False
    membership.delete()
    team_event_publish_on_commit(
        team_id=team.pk, event_type=TEAM_MEMBER_LEFT,
        payload=team_member_payload(team_id=team.pk, user=user, role=membership.role),
    )
    unsubscribe_user_on_commit(user.pk, team_channel(team.pk))
    active_ids = Execution.objects.filter(team=team, status__in=ACTIVE_STATUSES).values_list("id", flat=True)
    for execution_id in active_ids:
        unsubscribe_user_on_commit(user.pk, execution_channel(execution_id))
    return True


@transaction.atomic
def team_rename(*, team: Team, name: str) -> Team:
    """Rename a team; its members hear ``team_renamed`` after commit (nothing when the name is the same)."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValueError("a team name must be 1-200 characters")
    locked = Team.objects.select_for_update().get(pk=team.pk)
    previous_name = locked.name
    if previous_name != name:
        locked.name = name
        locked.save(update_fields=["name"])
        team_event_publish_on_commit(
            team_id=team.pk, event_type=TEAM_RENAMED,
            payload={"team_id": str(team.pk), "name": name, "previous_name": previous_name},
        )
    team.name = name
    return locked


# ------------------------------------------------------------------ executions


@transaction.atomic
def execution_create(*, team: Team, created_by: Any = None, external_id: str = "", demo: bool = False) -> Execution:
    """Create a queued execution of a team, optionally carrying the engine's own id of the run.

    An ``external_id`` is unique within its team: a second one raises ``ExecutionConflictError``.
    """
    if not isinstance(external_id, str) or len(external_id) > 200:
        raise ExecutionValueError("external_id must be a string of at most 200 characters")
    try:
        # A savepoint: the duplicate's IntegrityError must not break the caller's transaction.
        with transaction.atomic():
            execution = Execution.objects.create(
                team=team, created_by=created_by, status=Execution.Status.QUEUED, external_id=external_id, demo=demo
            )
    except IntegrityError:
        raise ExecutionConflictError(f"team {team.pk} already has an execution with external_id {external_id!r}") \
            from None
    execution_update_publish_on_commit(execution=execution)
    return execution


@transaction.atomic
def execution_start(*, execution: Execution) -> Execution:
    """Move a queued execution to running."""
    execution = _lock(execution)
    if execution.status != Execution.Status.QUEUED:
        raise ExecutionTransitionError(f"cannot start an execution that is {execution.status}; only a queued one")
    execution.status = Execution.Status.RUNNING
    execution.started_at = timezone.now()
    return _save(execution, ["status", "started_at"])


@transaction.atomic
def execution_update_progress(*, execution: Execution, progress: int, current_step: str | None = None) -> Execution:
    """Report the progress (0..100, never lower than before) and optionally the step of a running execution.

    ``current_step=None`` keeps the current step. Reporting exactly the current state changes
    nothing and publishes nothing.
    """
    _check_progress_value(progress)
    execution = _lock(execution)
    if execution.status != Execution.Status.RUNNING:
        raise ExecutionTransitionError(
            f"cannot report progress of an execution that is {execution.status}; only of a running one"
        )
    if progress < execution.progress:
        raise ExecutionValueError(f"progress cannot go down: it is {execution.progress}, got {progress}")
    step = execution.current_step if current_step is None else current_step
    if progress == execution.progress and step == execution.current_step:
        return execution
    execution.progress = progress
    execution.current_step = step
    return _save(execution, ["progress", "current_step"])


@transaction.atomic
def execution_complete(*, execution: Execution, result: Any = None) -> Execution:
    """End a running execution successfully with its result; progress becomes 100."""
    execution = _lock(execution)
    if execution.status != Execution.Status.RUNNING:
        raise ExecutionTransitionError(f"cannot complete an execution that is {execution.status}; only a running one")
    execution.status = Execution.Status.COMPLETED
    execution.progress = 100
    execution.result = result
    execution.finished_at = timezone.now()
    return _save(execution, ["status", "progress", "result", "finished_at"])


@transaction.atomic
def execution_fail(*, execution: Execution, error: str) -> Execution:
    """End a queued or running execution as failed with an error message."""
    if not isinstance(error, str) or not error.strip():
        raise ExecutionValueError("a failure needs a non-empty error message")
    execution = _lock(execution)
    if execution.is_terminal:
        raise ExecutionTransitionError(f"cannot fail an execution that already ended ({execution.status})")
    execution.status = Execution.Status.FAILED
    execution.error = error
    execution.finished_at = timezone.now()
    return _save(execution, ["status", "error", "finished_at"])


@transaction.atomic
def execution_cancel(*, execution: Execution, user: Any, as_staff: bool = False) -> Execution:
    """Cancel a queued or running execution on behalf of a member of its team (or of staff).

    A cancelled execution ends as failed with the error ``cancelled by <username>``: the
    protocol has no ``cancelled`` status, and the message tells the team who stopped it.
    ``cancelled_at`` is set too: the engine running it learns of the cancel from the
    ``execution_update`` it may follow, from ``GET /api/executions/<id>/``, or from the 409
    that its next report gets.
    """
    if not as_staff and not team_membership_exists(user=user, team_id=execution.team_id):
        raise ExecutionPermissionError("only members of the execution's team may cancel it")
    execution = _lock(execution)
    if execution.is_terminal:
        raise ExecutionTransitionError(f"cannot cancel an execution that already ended ({execution.status})")
    execution.cancelled_at = timezone.now()
    execution.save(update_fields=["cancelled_at"])
    return execution_fail(execution=execution, error=f"cancelled by {user.get_username()}")


@transaction.atomic
def execution_report(
    *,
    execution: Execution,
    status: str | None = None,
    progress: int | None = None,
    current_step: str | None = None,
    result: Any = None,
    error: str | None = None,
) -> Execution:
    """Apply one report of an external runner, all of it or nothing.

    In order: ``status="running"`` starts a queued execution (and is a no-op on a running one),
    then progress and step are reported, then ``status="completed"`` or ``"failed"`` ends it.
    So ``{"status": "completed", "progress": 100, "result": ...}`` is one valid report. Each
    step publishes its own update, and none of them is sent if a later step is refused.
    """
    if status not in (None, *Execution.Status.values) or status == Execution.Status.QUEUED:
        raise ExecutionValueError(f"a runner can report status running, completed or failed, not {status!r}")
    if _lock(execution).cancelled_at is not None:
        raise ExecutionCancelledError("the execution was cancelled; stop running it")
    if status == Execution.Status.RUNNING:
        if _lock(execution).status == Execution.Status.QUEUED:
            execution = execution_start(execution=execution)
    if progress is not None or current_step is not None:
        current = _lock(execution)
        execution = execution_update_progress(
            execution=current, progress=current.progress if progress is None else progress, current_step=current_step
        )
    if status == Execution.Status.COMPLETED:
        execution = execution_complete(execution=execution, result=result)
    elif status == Execution.Status.FAILED:
        execution = execution_fail(execution=execution, error=error or "")
    return _lock(execution)


def _lock(execution: Execution) -> Execution:
    # Re-read under the row lock: the caller's instance may be stale, and the rules must be
    # checked against the committed state that no one else can change until we commit.
    return Execution.objects.select_for_update().get(pk=execution.pk)


def _save(execution: Execution, fields: list[str]) -> Execution:
    execution.save(update_fields=[*fields, "updated_at"])
    execution_update_publish_on_commit(execution=execution)
    return execution


def _check_progress_value(progress: Any) -> None:
    if isinstance(progress, bool) or not isinstance(progress, int):
        raise ExecutionValueError(f"progress must be an integer, got {progress!r}")
    if not 0 <= progress <= 100:
        raise ExecutionValueError(f"progress must be within 0..100, got {progress}")
