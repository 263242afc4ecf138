"""realtime.storage.registry: every live socket of every process in Redis, per-user counts, expiry of dead processes."""

from __future__ import annotations

import time

import pytest

from realtime.conf import setting
from realtime.storage import redis as rt_redis
from realtime.storage import registry, streams


def entry(connection_id: str, user_id: str, **extra) -> dict:
    return {"connection_id": connection_id, "user_id": user_id, "connected_at": time.time(), **extra}


async def test_add_many_counts_each_user_s_connections_as_it_adds_them():
    added = await registry.add_many([(entry("c1", "5"), ()), (entry("c2", "5"), ()), (entry("c3", "6"), ())])

    assert [count for count, _ in added] == [1, 2, 1]
    assert registry.user_connection_count("5") == 2
    assert {e["connection_id"] for e in registry.live_connections()} == {"c1", "c2", "c3"}
    assert {e["process"] for e in registry.live_connections()} == {registry.PROCESS_ID}


async def test_add_many_reads_the_positions_each_welcome_names_once_per_channel():
    added = await registry.add_many([(entry("c1", "5"), ("user:5", "broadcast")), (entry("c2", "6"), ("broadcast",))])

    (_, [user5, broadcast_1]), (_, [broadcast_2]) = added
    assert broadcast_1 == broadcast_2  # one read of broadcast for the batch
    assert (user5.offset, broadcast_1.offset) == (0, 0)
    epoch = rt_redis.sync_client().hget(streams.meta_key("broadcast"), "epoch").decode()
    assert broadcast_1.epoch == epoch  # the channel's epoch was created and kept


async def test_add_many_joins_channel_layer_groups_as_group_add_would():
    group_key = f"{setting('KEY_PREFIX')}:test-group".encode()  # under the prefix each test starts clean
    added = await registry.add_many([(entry("c1", "5"), ())], groups=([group_key], "process-channel!", 60))

    assert added[0][0] == 1
    client = rt_redis.sync_client()
    assert client.zrange(group_key, 0, -1) == [b"process-channel!"]
    assert 0 < client.ttl(group_key) <= 60


async def test_remove_forgets_a_closed_connection():
    await registry.add_many([(entry("c1", "5"), ()), (entry("c2", "5"), ())])

    await registry.remove("c1", "5")

    assert registry.user_connection_count("5") == 1
    assert [e["connection_id"] for e in registry.live_connections()] == ["c2"]


async def test_refresh_rewrites_the_entries_and_pushes_their_expiry(settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "REGISTRY_TTL_S": 2}
    await registry.add_many([(entry("c1", "5"), ()), (entry("gone", "5"), ())])

    await registry.refresh([entry("c1", "5", channels=["user:5", "team:1"])])

    [live] = registry.live_connections()
    assert live["connection_id"] == "c1" and live["channels"] == ["user:5", "team:1"]
    score = rt_redis.sync_client().zscore(registry.procs_key(), registry.PROCESS_ID)
    assert time.time() < score <= time.time() + 2


async def test_a_process_that_stops_refreshing_disappears_with_its_connections(settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "REGISTRY_TTL_S": 1}
    await registry.add_many([(entry("c1", "5"), ())])
    client = rt_redis.sync_client()
    client.zadd(registry.procs_key(), {registry.PROCESS_ID: time.time() - 1})  # as if it stopped a while ago

    assert registry.prune_stale() == 1
    assert registry.live_connections() == []
    assert not client.exists(registry.proc_key())


@pytest.mark.parametrize("user_id", ["5", "abc"])
def test_a_user_s_counter_shares_the_hash_tag_of_their_personal_channel(user_id):
    tag = registry.user_key(user_id).split("{", 1)[1].split("}", 1)[0]
    assert tag == f"user:{user_id}" == streams.history_key(f"user:{user_id}").split("{", 1)[1].split("}", 1)[0]
