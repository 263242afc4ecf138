"""The events of the executions app: ``execution_update`` and the team events, published after commit.

One function builds the execution payload (used by publications, socket snapshots and the
REST output alike, so all three always agree) and one publishes it to both channels that
carry it. Team events (``team_member_joined``, ``team_member_left``,
``team_member_role_changed``, ``team_renamed``) go to ``team:<id>``; their payload schemas are
registered in ``realtime.schemas``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from executions.models import Execution
from realtime.publish import publish_on_commit

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


def iso_z(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a ``Z``, as every timestamp of the protocol."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        "updated_at": iso_z(execution.updated_at),
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
