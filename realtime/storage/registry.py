"""The connection registry: every live socket of every server process, kept in Redis.

Each process owns one hash (connection id -> JSON) that expires unless the process refreshes
it, and a score in the ``procs`` sorted set (its expiry time). A crashed process stops
refreshing, so its connections disappear on their own within REGISTRY_TTL_S. Per-user sorted
sets (connection id scored by expiry) count a user's live connections across processes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from typing import Any

import orjson

from realtime.conf import setting
from realtime.storage import redis as rt_redis
from realtime.storage import streams

PROCESS_ID = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _k(*parts: str) -> str:
    return ":".join((setting("KEY_PREFIX"), *parts))


def procs_key() -> str:
    """Sorted set of server processes scored by the time their entries expire."""
    return _k("procs")


def proc_key(process_id: str = PROCESS_ID) -> str:
    """Hash of one process's connections."""
    return _k("proc", process_id)


def user_key(user_id: str) -> str:
    """Sorted set of a user's connection ids scored by expiry time; hash-tagged like the user's
    personal channel, so on a Redis Cluster a user's limit lives in one slot, beside their stream."""
    return _k("uconn", f"{{user:{user_id}}}")


# Adds a batch of connections and reads the positions of the channels their welcomes name.
# KEYS = process hash, process set, each entry's user set, (meta, history) per channel, then
# the channel-layer group keys to join; ARGV = ttl, now, process id, entries, META_TTL_S,
# channels, groups, group member, group expiry, (connection id, JSON) per entry, then a new
# epoch per channel. Each group gets what channels_redis's group_add writes (ZADD now member,
# EXPIRE). Returns {each user's live connection count, counted right after adding that entry;
# {epoch, offset} per channel}. One command per batch instead of four per connection and one
# per channel: the keys of many users in one script need one Redis server (or a Sentinel
# master); on a Redis Cluster ``add_many`` makes the same writes per slot instead.
REGISTER_LUA = streams.POSITION_LUA + """
local ttl = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local entries = tonumber(ARGV[4])
local channels = tonumber(ARGV[6])
local groups = tonumber(ARGV[7])
local expires = now + ttl
local counts = {}
for j = 1, entries do
  local connection_id, user_key = ARGV[8 + 2 * j], KEYS[2 + j]
  redis.call('HSET', KEYS[1], connection_id, ARGV[9 + 2 * j])
  redis.call('ZADD', user_key, expires, connection_id)
  redis.call('EXPIRE', user_key, ttl)
  counts[j] = redis.call('ZCOUNT', user_key, now, '+inf')
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], expires, ARGV[3])
local positions = {}
for c = 1, channels do
  local meta = 3 + entries + 2 * (c - 1)
  local epoch, offset = position(KEYS[meta], KEYS[meta + 1], ARGV[9 + 2 * entries + c], ARGV[5])
  positions[c] = {epoch, offset}
end
for g = 1, groups do
  local group = KEYS[2 + entries + 2 * channels + g]
  redis.call('ZADD', group, ARGV[2], ARGV[8])
  redis.call('EXPIRE', group, ARGV[9])
end
return {counts, positions}
"""


async def add_many(items: list[tuple[dict[str, Any], tuple[str, ...]]],
                   groups: tuple[list[bytes], str, int] | None = None) -> list[tuple[int, list]]:
    """Record new connections, each with the channels whose positions its welcome names; returns,
    per connection, how many live connections its user now has and those positions.

    One script call for the batch (the sockets starting together, ``realtime.transports.consumers``),
    which also joins ``groups`` = (channel-layer group keys, member, expiry) when given.
    """
    # Each channel is read once per batch: in a storm every socket asks for ``broadcast``.
    channels = list(dict.fromkeys(channel for _, read_channels in items for channel in read_channels))
    if rt_redis.is_cluster():
        return await _add_many_per_slot(items, channels)
    register = rt_redis.async_script(REGISTER_LUA)
    group_keys, member, expiry = groups or ([], "", 0)
    keys: list[Any] = [proc_key(), procs_key()]
    args: list[Any] = [setting("REGISTRY_TTL_S"), repr(time.time()), PROCESS_ID, len(items), setting("META_TTL_S"),
                       len(channels), len(group_keys), member, expiry]
    for entry, _ in items:
        keys.append(user_key(entry["user_id"]))
        args += (entry["connection_id"], orjson.dumps(entry))
    for channel in channels:
        keys += (streams.meta_key(channel), streams.history_key(channel))
        args.append(streams.new_epoch())
    keys += group_keys
    # A Script call: EVALSHA, loading the script when Redis lost it (a restart).
    counts, positions = await register(keys=keys, args=args)
    read = {channel: streams.ReadResult(epoch.decode(), int(offset), [])
            for channel, (epoch, offset) in zip(channels, positions, strict=True)}
    return [(int(count), [read[c] for c in read_channels])
            for count, (_, read_channels) in zip(counts, items, strict=True)]


# Channel positions read at once per batch of connects on a Redis Cluster.
READS_IN_FLIGHT = 32


async def _add_many_per_slot(items: list[tuple[dict[str, Any], tuple[str, ...]]],
                             channels: list[str]) -> list[tuple[int, list]]:
    """``add_many`` on a Redis Cluster, where one script may only touch one slot: the same
    writes as REGISTER_LUA in one pipeline (the client sends each node its commands), and the
    positions with READ_LUA per channel, concurrently. The control memberships are the
    channel layer's own (``realtime.storage.layers.ClusterChannelLayer``)."""
    client = rt_redis.async_client()
    ttl, now = setting("REGISTRY_TTL_S"), time.time()
    pipe = client.pipeline()
    for entry, _ in items:
        key = user_key(entry["user_id"])
        pipe.zadd(key, {entry["connection_id"]: now + ttl})
        pipe.expire(key, ttl)
        pipe.zcount(key, now, "+inf")
    pipe.hset(proc_key(), mapping={entry["connection_id"]: orjson.dumps(entry) for entry, _ in items})
    pipe.expire(proc_key(), ttl)
    pipe.zadd(procs_key(), {PROCESS_ID: now + ttl})
    read = rt_redis.async_script(streams.READ_LUA)
    # At most READS_IN_FLIGHT at a time: each is a connection of the cluster client's pool,
    # which raises (not waits) when it is exhausted, and a storm's batch names hundreds.
    gate = asyncio.Semaphore(READS_IN_FLIGHT)

    async def position(channel: str) -> Any:
        async with gate:
            return await read(*streams.read_args(channel, -1))

    replies, *positions = await asyncio.gather(pipe.execute(), *(position(channel) for channel in channels))
    # ZADD, EXPIRE, ZCOUNT per entry: a user's count right after adding that entry, as in the script.
    counts = replies[2:3 * len(items):3]
    found = {channel: streams.parse_read(reply) for channel, reply in zip(channels, positions, strict=True)}
    return [(int(count), [found[c] for c in read_channels])
            for count, (_, read_channels) in zip(counts, items, strict=True)]


async def remove(connection_id: str, user_id: str) -> None:
    """Forget a closed connection."""
    pipe = rt_redis.async_client().pipeline(transaction=False)
    pipe.hdel(proc_key(), connection_id)
    pipe.zrem(user_key(user_id), connection_id)
    await pipe.execute()


# Registry entries per HSET of a refresh.
REFRESH_CHUNK = 1000


async def refresh(entries: list[dict[str, Any]]) -> None:
    """Rewrite this process's entries (activity, channels) and push their expiry forward."""
    ttl = setting("REGISTRY_TTL_S")
    expires = time.time() + ttl
    pipe = rt_redis.async_client().pipeline(transaction=False)
    pipe.delete(proc_key())
    # HSETs of REFRESH_CHUNK entries: one HSET of a process's 20,000 entries would be a ~10 MB
    # command that holds Redis (or its shard) for milliseconds.
    for start in range(0, len(entries), REFRESH_CHUNK):
        chunk = entries[start:start + REFRESH_CHUNK]
        pipe.hset(proc_key(), mapping={e["connection_id"]: orjson.dumps(e) for e in chunk})
    if entries:
        pipe.expire(proc_key(), ttl)
    pipe.zadd(procs_key(), {PROCESS_ID: expires})
    for entry in entries:
        pipe.zadd(user_key(entry["user_id"]), {entry["connection_id"]: expires})
        pipe.expire(user_key(entry["user_id"]), ttl)
    await pipe.execute()


def live_connections() -> list[dict[str, Any]]:
    """Every live connection of every process (sync; for the admin and management commands)."""
    client = rt_redis.sync_client()
    now = time.time()
    live = client.zrangebyscore(procs_key(), now, "+inf")
    client.zremrangebyscore(procs_key(), "-inf", now)
    connections: list[dict[str, Any]] = []
    for process_id in live:
        for raw in client.hvals(proc_key(process_id.decode())):
            entry = orjson.loads(raw)
            entry["process"] = process_id.decode()
            connections.append(entry)
    connections.sort(key=lambda e: e["connected_at"])
    return connections


def user_connection_count(user_id: str) -> int:
    """Live connections of a user across processes."""
    return int(rt_redis.sync_client().zcount(user_key(user_id), time.time(), "+inf"))


def prune_stale() -> int:
    """Drop registry entries of processes that stopped refreshing; returns how many processes."""
    client = rt_redis.sync_client()
    now = time.time()
    stale = client.zrangebyscore(procs_key(), "-inf", now)
    for process_id in stale:
        client.delete(proc_key(process_id.decode()))
    client.zremrangebyscore(procs_key(), "-inf", now)
    return len(stale)
