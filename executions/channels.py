"""The ``team:`` and ``execution:`` channel namespaces: who may subscribe, what a subscriber sees first.

Registered by ``ExecutionsConfig.ready``. The checks run in Django's database thread. They
answer False, never raise, for anything they cannot match to a membership (malformed ids,
unknown teams or executions), so that a client learns nothing beyond ``forbidden``.
"""

from __future__ import annotations

import uuid
from typing import Any

from executions.events import EXECUTION_UPDATE, execution_update_payload
from executions.models import Execution
from executions.selectors import execution_get_for_user, team_membership_exists
from realtime.channels import register_channel, suffix


def team_can_subscribe(user: Any, channel: str) -> bool:
    """Members of the team may follow ``team:<team_id>``."""
    return team_membership_exists(user=user, team_id=suffix(channel))


def execution_can_subscribe(user: Any, channel: str) -> bool:
    """Members of the execution's team may follow ``execution:<execution_id>``."""
    return _execution_for(user, channel) is not None


def execution_snapshot(user: Any, channel: str) -> tuple[str, dict] | None:
    """The execution's current state, sent to a new subscriber before any live update."""
    execution = _execution_for(user, channel)
    if execution is None:
        return None
    return EXECUTION_UPDATE, execution_update_payload(execution=execution)


def register_execution_channels() -> None:
    """Register both namespaces with the realtime transport."""
    register_channel("team:", can_subscribe=team_can_subscribe)
    register_channel("execution:", can_subscribe=execution_can_subscribe, snapshot=execution_snapshot)


def _execution_for(user: Any, channel: str) -> Execution | None:
    raw_id = suffix(channel)
    try:
        canonical = str(uuid.UUID(raw_id)) == raw_id
    except ValueError:
        return None
    # Only the canonical spelling: it is the channel the service publishes to, and accepting
    # another spelling would subscribe a client to a channel that never gets a message.
    if not canonical:
        return None
    return execution_get_for_user(user=user, execution_id=raw_id)
