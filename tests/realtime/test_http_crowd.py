"""A crowd of long pollers against a real server process on PostgreSQL (no timing assertions).

300 clients poll ``POST /api/realtime/poll/`` with ``user:<id>``, ``broadcast`` and their
team's channel while messages are published to all three kinds; every message must arrive
exactly as often as it was addressed, and the server's PostgreSQL connections (sampled from
``pg_stat_activity`` by the application name the server gets) must stay within its ceiling.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from loadtest.http_clients import Stats, long_poller
from loadtest.http_fallback import ConnectionSampler
from realtime.publish import publish_rollback_unsafe
from tests import live
from tests.conftest import access_token_for

pytestmark = pytest.mark.django_db(transaction=True)

POLLERS = 300
TEAM_SIZE = 50
POOL_MAX = 4


def _crowd() -> tuple[list, list[int]]:
    from django.contrib.auth import get_user_model

    from executions.models import Team, TeamMembership

    model = get_user_model()
    model.objects.bulk_create([model(username=f"crowd{i:04d}", password="!") for i in range(POLLERS)])
    users = list(model.objects.filter(username__startswith="crowd").order_by("username"))
    teams = Team.objects.bulk_create([Team(name=f"crowd {j}", slug=f"crowd-{j}") for j in range(POLLERS // TEAM_SIZE)])
    team_of = [teams[i // TEAM_SIZE].pk for i in range(POLLERS)]
    TeamMembership.objects.bulk_create([TeamMembership(team_id=t, user=u) for u, t in zip(users, team_of, strict=True)])
    return users, team_of


def _publish_all(users: list, teams: list[int]) -> Counter:
    """Two messages per user, three broadcasts, one per team; returns how often each seq is due."""
    due: Counter = Counter()
    seq = 0
    for _ in range(2):
        for user in users:
            publish_rollback_unsafe(f"user:{user.pk}", "system_event", {"seq": seq, "t": time.time()})
            due[seq] += 1
            seq += 1
        publish_rollback_unsafe("broadcast", "system_event", {"seq": seq, "t": time.time()})
        due[seq] += len(users)
        seq += 1
    for team in sorted(set(teams)):
        publish_rollback_unsafe(f"team:{team}", "system_event", {"seq": seq, "t": time.time()})
        due[seq] += teams.count(team)
        seq += 1
    publish_rollback_unsafe("broadcast", "system_event", {"seq": seq, "t": time.time()})
    due[seq] += len(users)
    return due


async def test_300_pollers_get_every_message_within_the_connection_ceiling(live_server_factory):
    if connection.vendor != "postgresql":
        pytest.skip("the connection ceiling is PostgreSQL's (DATABASE_URL=postgres://...); SQLite has no server "
                    "connections to count")
    users, teams = await sync_to_async(_crowd)()
    tokens = [access_token_for(user) for user in users]
    app_name = f"renum-crowd-{time.time_ns()}"
    server = await asyncio.to_thread(live_server_factory, PGAPPNAME=app_name, DATABASE_POOL_MAX_SIZE=str(POOL_MAX),
                                     REALTIME_CONNECTS_PER_IP_PER_MINUTE="0")
    sampler = ConnectionSampler(live.test_database_url(), app_name)
    sampler.start()
    stats, stop = Stats(), asyncio.Event()
    pollers = [asyncio.ensure_future(long_poller("127.0.0.1", server.port, token,
                                                 [f"user:{user.pk}", "broadcast", f"team:{team}"], stats, stop))
               for user, token, team in zip(users, tokens, teams, strict=True)]
    try:
        deadline = time.monotonic() + 120
        while stats.ready < POLLERS and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert stats.ready == POLLERS, f"only {stats.ready} pollers got their first answer; errors {stats.errors}"
        await asyncio.sleep(1)  # every poller is waiting now
        due = await asyncio.to_thread(_publish_all, users, teams)
        deadline = time.monotonic() + 120
        while len(stats.received) < sum(due.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        for poller in pollers:
            poller.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        sampler.halt.set()
        await asyncio.to_thread(sampler.join, 5)

    got = Counter(seq for seq, _, _ in stats.received)
    assert got == due  # every message, each exactly as often as it was addressed: none lost, none twice
    assert not stats.errors
    assert sampler.samples > 10
    assert 1 <= sampler.maximum <= POOL_MAX + 1  # the pool, and the connect path's own lookup connection
