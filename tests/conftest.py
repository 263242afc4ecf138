"""Shared fixtures: users, tokens, a clean Redis namespace, and socket helpers."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

_counter = itertools.count(1)


@pytest.fixture(autouse=True)
def _clean_realtime_redis(settings):
    """Every test starts with no realtime keys in Redis (history, registry, tickets, layer)."""
    from realtime import redis as rt_redis

    client = rt_redis.sync_client()
    for key in client.scan_iter(match="renum:*", count=1000):
        client.delete(key)
    yield


@pytest.fixture
def make_user(db):
    """Create a user: ``make_user(username=None, **fields)``."""

    def make(username: str | None = None, password: str = "pw-secret-123", **fields: Any):
        username = username or f"user{next(_counter)}"
        return get_user_model().objects.create_user(username=username, password=password, **fields)

    return make


@pytest.fixture
def user(make_user):
    """A plain active user."""
    return make_user()


def access_token_for(user) -> str:
    """A fresh simplejwt access token for a user."""
    return str(AccessToken.for_user(user))


@pytest.fixture
def api_client():
    """A DRF test client."""
    return APIClient()


@pytest.fixture
def auth_client(user):
    """A DRF test client authenticated with the ``user`` fixture's JWT."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}")
    return client


# ---------------------------------------------------------------- reliability report

def pytest_addoption(parser):
    """``--reliability-report PATH`` writes what the failure scenarios measured (docs/reliability.md)."""
    parser.addoption("--reliability-report", default=None, help="write the failure-test measurements here")


_reliability_rows: list[dict[str, Any]] = []


@pytest.fixture
def reliability():
    """``reliability(scenario=..., **measurements)`` records one row of docs/reliability.md."""
    return lambda **row: _reliability_rows.append(row)


def pytest_sessionfinish(session, exitstatus):
    """Render the recorded rows when asked to."""
    path = session.config.getoption("--reliability-report")
    if not path or not _reliability_rows:
        return
    from tests.reliability_report import render

    with open(path, "w") as out:
        out.write(render(_reliability_rows, exitstatus))
