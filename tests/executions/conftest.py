"""Fixtures of the executions tests: teams, members, outsiders, and reading published history."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from executions.models import Team
from executions.services import team_create, team_membership_add
from tests.conftest import read_history

_teams = itertools.count(1)


@pytest.fixture
def make_team(db):
    """Create a team: ``make_team(*members, name=None)``; the first member is its owner."""

    def make(*members: Any, name: str | None = None) -> Team:
        number = next(_teams)
        team = team_create(name=name or f"Team {number}", slug=f"team-{number}", owner=members[0] if members else None)
        for member in members[1:]:
            team_membership_add(team=team, user=member, role="member")
        return team

    return make


@pytest.fixture
def member(make_user):
    """A user who belongs to ``team``."""
    return make_user(username="member")


@pytest.fixture
def outsider(make_user):
    """A user who belongs to no team of the test."""
    return make_user(username="outsider")


@pytest.fixture
def team(make_team, member):
    """A team whose only member (and owner) is ``member``."""
    return make_team(member)


def published(channel: str) -> list[dict[str, Any]]:
    """Every envelope stored in a channel's Redis history, oldest first."""
    return [orjson.loads(record.body) for record in read_history(channel)]


def published_payloads(channel: str) -> list[dict[str, Any]]:
    """The payloads of the ``execution_update`` messages of a channel, oldest first."""
    return [env["payload"] for env in published(channel) if env["type"] == "execution_update"]


