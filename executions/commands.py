"""Socket commands of the executions app (``{"type": "command", "payload": {"name": ..., "args": ...}}``)."""

from __future__ import annotations

from typing import Any

from executions.events import execution_update_payload
from executions.selectors import execution_get_for_user
from executions.services import ExecutionPermissionError, ExecutionTransitionError, execution_cancel
from realtime.core.commands import CommandError, register_command


def execution_cancel_command(user: Any, args: dict[str, Any]) -> dict[str, Any]:
    """``execution.cancel {execution_id}``: cancel an execution of one of the user's teams.

    Answers the execution's new state. Unknown ids and other teams' executions both answer
    ``not_found``, so the command cannot be used to probe which executions exist.
    """
    execution_id = args.get("execution_id")
    if not isinstance(execution_id, str):
        raise CommandError("invalid_message", "execution.cancel needs args.execution_id (a UUID string)")
    execution = execution_get_for_user(user=user, execution_id=execution_id)
    if execution is None:
        raise CommandError("not_found", "no such execution")
    try:
        execution = execution_cancel(execution=execution, user=user)
    except ExecutionPermissionError:
        # Membership ended between the lookup and the cancel: same answer as for a stranger.
        raise CommandError("not_found", "no such execution") from None
    except ExecutionTransitionError as exc:
        raise CommandError("invalid_state", str(exc)) from None
    return {"execution": execution_update_payload(execution=execution)}


def register_execution_commands() -> None:
    """Register the app's socket commands with the realtime transport."""
    register_command("execution.cancel", execution_cancel_command)
