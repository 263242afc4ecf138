"""Reads of the executions app: what a user may see, never more."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery

from executions.models import Execution, Team, TeamMembership


def team_list_for_user(*, user: Any) -> QuerySet[Team]:
    """The teams a user belongs to, each annotated with the user's ``role`` in it."""
    if not getattr(user, "is_authenticated", False):
        return Team.objects.none()
    role = TeamMembership.objects.filter(team=OuterRef("pk"), user_id=user.pk).values("role")[:1]
    return Team.objects.filter(memberships__user_id=user.pk).annotate(role=Subquery(role)).order_by("name", "id")


def team_get_for_user(*, user: Any, team_id: Any) -> Team | None:
    """The team with this id when the user belongs to it, else None (also for malformed ids)."""
    parsed = int_id_or_none(team_id)
    if parsed is None:
        return None
    return team_list_for_user(user=user).filter(pk=parsed).first()


def team_get(*, team_id: Any) -> Team | None:
    """The team with this id, whoever asks (for services), or None (also for malformed ids)."""
    parsed = int_id_or_none(team_id)
    if parsed is None:
        return None
    return Team.objects.filter(pk=parsed).first()


def team_member_ids(*, team_id: Any) -> list[Any] | None:
    """The ids of a team's active members, in id order; None when there is no such team."""
    team = team_get(team_id=team_id)
    if team is None:
        return None
    return list(
        TeamMembership.objects.filter(team=team, user__is_active=True).order_by("user_id").values_list("user_id",
                                                                                                        flat=True)
    )


def team_membership_exists(*, user: Any, team_id: Any) -> bool:
    """Whether the user is a member of the team; False for anonymous users and malformed ids."""
    parsed = int_id_or_none(team_id)
    if parsed is None or not getattr(user, "is_authenticated", False):
        return False
    return TeamMembership.objects.filter(team_id=parsed, user_id=user.pk).exists()


def execution_list(*, user: Any, team_id: int | None = None, status: str | None = None) -> QuerySet[Execution]:
    """Executions of the user's teams, newest first, optionally of one team and one status."""
    if not getattr(user, "is_authenticated", False):
        return Execution.objects.none()
    executions = Execution.objects.filter(team__memberships__user_id=user.pk).select_related("team")
    if team_id is not None:
        executions = executions.filter(team_id=team_id)
    if status is not None:
        executions = executions.filter(status=status)
    return executions.order_by("-created_at", "-id")


def execution_get(*, execution_id: Any) -> Execution | None:
    """The execution with this id, whoever asks (for runners and services), or None."""
    parsed = _uuid_or_none(execution_id)
    if parsed is None:
        return None
    return Execution.objects.select_related("team").filter(pk=parsed).first()


def execution_get_for_user(*, user: Any, execution_id: Any) -> Execution | None:
    """The execution when it belongs to one of the user's teams, else None.

    Unknown ids and other teams' executions look the same, so nothing leaks their existence.
    """
    parsed = _uuid_or_none(execution_id)
    if parsed is None:
        return None
    return execution_list(user=user).filter(pk=parsed).first()


def int_id_or_none(value: Any) -> int | None:
    """An integer id as a client may spell it (digits, at most 18), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
