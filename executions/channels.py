"""The ``team:`` and ``execution:`` channel namespaces: who may subscribe, what a subscriber sees first.

Registered by ``ExecutionsConfig.ready``. The team check is batched on the event loop; the
execution checks run in Django's database thread. They answer False, never raise, for
anything they cannot match to a membership (malformed ids, unknown teams or executions), so
that a client learns nothing beyond ``forbidden``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import router

from executions.events import EXECUTION_UPDATE, execution_update_payload
from executions.models import Execution, TeamMembership
from executions.selectors import execution_get_for_user, int_id_or_none
from realtime.core.channels import register_channel, suffix
from realtime.core.users import fetch_rows
from realtime.fanout.batching import PerLoop


async def team_can_subscribe(user: Any, channel: str) -> bool:
    """Members of the team may follow ``team:<team_id>``.

    Asked for every socket subscribe and every long poll and stream of a team member: checks
    made at the same moment share one query (``realtime.fanout.batching``), run on the event loop's
    own connection on PostgreSQL (``realtime.core.users.fetch_rows``), not one query each in
    Django's database thread.
    """
    team_id = int_id_or_none(suffix(channel))
    if team_id is None or not getattr(user, "is_authenticated", False):
        return False
    return await _memberships.submit((user.pk, team_id))


async def _members(pairs: list[tuple[Any, int]]) -> list[bool]:
    """Which (user id, team id) pairs are memberships, in one SELECT."""
    table, team, member = TeamMembership._meta.db_table, "team_id", "user_id"
    users = list(dict.fromkeys(user_id for user_id, _ in pairs))
    teams = list(dict.fromkeys(team_id for _, team_id in pairs))

    def sql(connection: Any) -> tuple[str, list[Any]]:
        quote = connection.ops.quote_name
        return (f"SELECT {quote(member)}, {quote(team)} FROM {quote(table)}"
                f" WHERE {quote(team)} IN ({', '.join(['%s'] * len(teams))})"
                f" AND {quote(member)} IN ({', '.join(['%s'] * len(users))})", [*teams, *users])

    found = {(str(user_id), team_id) for user_id, team_id in
             await fetch_rows(router.db_for_read(TeamMembership), sql)}
    return [(str(user_id), team_id) in found for user_id, team_id in pairs]


# At most 400 pairs per query (SQLite's parameter limit is 999 for the two IN lists).
_memberships: PerLoop[tuple[Any, int], bool] = PerLoop(_members, max_batch=400)


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
