"""The events of the executions app: ``execution_update`` and the team events, published after commit.

Their payload structs are defined here and registered with the transport
(``EVENT_TYPES``, from ``AppConfig.ready``), which checks every publication of
these types against them; the TypeScript types of the client are checked against them by the
tests. One function builds the execution payload (used by publications, socket snapshots and
the REST output alike, so all three always agree) and one publishes it to both channels that
carry it. Team events (``team_member_joined``, ``team_member_left``,
``team_member_role_changed``, ``team_renamed``) go to ``team:<id>``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from executions.models import Execution
from realtime.publish import publish_on_commit
from realtime.schemas import wire_time_or_none

EXECUTION_UPDATE = "execution_update"
TEAM_MEMBER_JOINED = "team_member_joined"
TEAM_MEMBER_LEFT = "team_member_left"
TEAM_MEMBER_ROLE_CHANGED = "team_member_role_changed"
TEAM_RENAMED = "team_renamed"


def team_channel(team_id: Any) -> str:
    """Channel with every execution update of a team."""
    return f"team:{team_id}"


def execution_channel(execution_id: Any) -> str:
    """Channel with the updates of one execution."""
    return f"execution:{execution_id}"


Role = Literal["owner", "member"]


class ExecutionUpdatePayload(msgspec.Struct):
    """Payload of an ``execution_update`` message (the design's ExecutionUpdate)."""

    execution_id: str
    team_id: str
    status: Literal["queued", "running", "completed", "failed"]
    progress: Annotated[int, msgspec.Meta(ge=0, le=100)]
    updated_at: str
    current_step: str | None = None
    result: Any = None
    error: str | None = None


class TeamMemberPayload(msgspec.Struct, forbid_unknown_fields=True):
    """Payload of ``team_member_joined`` and ``team_member_left`` on ``team:<id>``."""

    team_id: str
    user_id: str
    username: str
    role: Role


class TeamMemberRoleChangedPayload(msgspec.Struct, forbid_unknown_fields=True):
    """Payload of ``team_member_role_changed`` on ``team:<id>``."""

    team_id: str
    user_id: str
    username: str
    role: Role
    previous_role: Role


class TeamRenamedPayload(msgspec.Struct, forbid_unknown_fields=True):
    """Payload of ``team_renamed`` on ``team:<id>``."""

    team_id: str
    name: str
    previous_name: str


# The app's message types and their payloads, registered with the transport from ``AppConfig.ready``.
EVENT_TYPES: dict[str, type[msgspec.Struct]] = {
    EXECUTION_UPDATE: ExecutionUpdatePayload,
    TEAM_MEMBER_JOINED: TeamMemberPayload,
    TEAM_MEMBER_LEFT: TeamMemberPayload,
    TEAM_MEMBER_ROLE_CHANGED: TeamMemberRoleChangedPayload,
    TEAM_RENAMED: TeamRenamedPayload,
}


def execution_update_payload(*, execution: Execution) -> dict[str, Any]:
    """The ExecutionUpdate of the protocol for an execution's current state."""
    return {
        "execution_id": str(execution.id),
        "team_id": str(execution.team_id),
        "status": execution.status,
        "progress": execution.progress,
        "current_step": execution.current_step or None,
        "result": execution.result,
        "error": execution.error or None,
        "updated_at": wire_time_or_none(execution.updated_at),
    }


def execution_update_publish_on_commit(*, execution: Execution) -> None:
    """Queue the execution's state for its team's channel and its own channel, sent on commit.

    The payload is built now, from the row the caller just saved under its lock, so what is
    published is exactly the state this transaction committed, not whatever is current later.
    """
    payload = execution_update_payload(execution=execution)
    # Each update carries the whole state, so a socket that falls behind needs only the newest
    # one per execution: the key lets its outbox drop superseded ones first under pressure.
    key = execution_channel(execution.id)
    publish_on_commit(team_channel(execution.team_id), EXECUTION_UPDATE, payload, coalesce_key=key)
    publish_on_commit(execution_channel(execution.id), EXECUTION_UPDATE, payload, coalesce_key=key)


def team_member_payload(*, team_id: Any, user: Any, role: str) -> dict[str, Any]:
    """Who joined or left a team, with the role they had."""
    return {"team_id": str(team_id), "user_id": str(user.pk), "username": user.get_username(), "role": role}


def team_event_publish_on_commit(*, team_id: Any, event_type: str, payload: dict[str, Any]) -> None:
    """Queue a team event for ``team:<team_id>``, sent on commit (nothing for a rolled-back change)."""
    publish_on_commit(team_channel(team_id), event_type, payload)
