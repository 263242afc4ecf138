"""Reads for the admin's monitoring panel: connections, subscribers, message rate, breaker, security.

Everything comes from Redis, so any server process shows the state of all of them: the
connection registry (``realtime.storage.registry``), the security accounting (``realtime.core.security``)
and Redis's own command statistics.

The message rate needs no hook on the publish path: every message is one ``PUBLISH`` in
``streams.PUBLISH_LUA`` and Redis counts the commands its scripts run, so the
``cmdstat_publish`` counter of ``INFO commandstats`` grows by one per message, whichever
process, worker or management command published it. Each read stores a sample (time,
counter) in a short sorted set, and the rate is the growth over the last RATE_WINDOW_S
seconds of samples. The counter is per Redis server: other applications publishing on the
same server are counted too (docs/operations.md).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from realtime import publish
from realtime.conf import setting
from realtime.core import security
from realtime.storage import redis as rt_redis
from realtime.storage import registry

RATE_WINDOW_S = 10.0
CONNECTIONS_SHOWN = 500


@dataclass(frozen=True, slots=True)
class Sample:
    """Redis's count of PUBLISH commands at one moment."""

    at: float
    published: int


def _samples_key() -> str:
    return f"{setting('KEY_PREFIX')}:stats:publish_samples"


def _per_node(section: str | None = None) -> list[dict[str, Any]]:
    """INFO of the Redis server, or of every master of a Redis Cluster."""
    client = rt_redis.sync_client()
    args = (section,) if section else ()
    if rt_redis.is_cluster():
        return list(client.info(*args, target_nodes=client.PRIMARIES).values())
    return [client.info(*args)]


def published_total() -> int:
    """PUBLISH (on a Cluster: SPUBLISH) commands the Redis servers ran since their start (or
    their last CONFIG RESETSTAT)."""
    return sum(int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
               for stats in _per_node("commandstats") for command in ("publish", "spublish"))


def rate_between(first: Sample, last: Sample) -> float | None:
    """Messages per second between two samples; None when unknown (too close, or the counter reset)."""
    elapsed = last.at - first.at
    grown = last.published - first.published
    if elapsed < 0.5 or grown < 0:
        return None
    return grown / elapsed


def message_rate(now: float | None = None) -> float | None:
    """Messages published per second over the last RATE_WINDOW_S seconds, across all processes.

    Records a sample on every call (the panel polls every few seconds); None until two samples
    at least half a second apart exist, e.g. on the first look after a quiet period.
    """
    now = time.time() if now is None else now
    current = Sample(now, published_total())
    key = _samples_key()
    pipe = rt_redis.sync_client().pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", now - RATE_WINDOW_S)
    pipe.zrangebyscore(key, now - RATE_WINDOW_S, "+inf", start=0, num=1, withscores=True)
    pipe.zadd(key, {f"{current.at:.6f}:{current.published}": current.at})
    pipe.expire(key, int(RATE_WINDOW_S * 3))
    _, oldest, _, _ = pipe.execute()
    if not oldest:
        return None
    member, at = oldest[0]
    return rate_between(Sample(at, int(member.decode().rsplit(":", 1)[1])), current)


def channel_subscribers(connections: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Live sockets per channel, most subscribed first (as of each process's last registry refresh)."""
    counts = Counter(channel for entry in connections for channel in entry.get("channels", ()))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def process_summary(connections: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Live sockets per server process."""
    counts = Counter(entry["process"] for entry in connections)
    return sorted(counts.items())


def circuit_state() -> dict[str, Any]:
    """The publish circuit breaker of the process answering (each process has its own)."""
    cb = publish.breaker()
    return {
        "state": cb.state,
        "consecutive_failures": cb.consecutive_failures,
        "total_failures": cb.total_failures,
        "total_skipped": cb.total_skipped,
    }


def redis_summary() -> dict[str, Any]:
    """A few numbers about the Redis server (version, memory, clients, operations per second);
    on a Cluster, of its masters together (memory per master)."""
    nodes = _per_node()
    return {
        "version": nodes[0].get("redis_version", ""),
        "used_memory": " + ".join(str(info.get("used_memory_human", "")) for info in nodes),
        "connected_clients": sum(int(info.get("connected_clients", 0)) for info in nodes),
        "ops_per_sec": sum(int(info.get("instantaneous_ops_per_sec", 0)) for info in nodes),
    }


def _matches(entry: dict[str, Any], query: str) -> bool:
    query = query.lower()
    return any(query in str(entry.get(field, "")).lower()
               for field in ("user_id", "username", "ip", "user_agent", "connection_id", "process"))


def monitor_snapshot(*, query: str = "", limit: int = CONNECTIONS_SHOWN) -> dict[str, Any]:
    """Everything the monitoring panel shows, as plain JSON-able data.

    When Redis cannot be read the snapshot says so in ``error`` instead of raising: the panel
    must still render during the outage it is supposed to show.
    """
    snapshot: dict[str, Any] = {
        "generated_at": time.time(),
        "error": "",
        "connections": [],
        "connections_total": 0,
        "connections_matching": 0,
        "users_total": 0,
        "channels": [],
        "processes": [],
        "messages_per_second": None,
        "circuit": circuit_state(),
        "redis": {},
        "security_events": [],
        "top_ips": [],
        "registry_refresh_s": setting("REGISTRY_REFRESH_S"),
    }
    try:
        connections = registry.live_connections()
        matching = [e for e in connections if _matches(e, query)] if query else connections
        snapshot.update({
            "connections": [{k: v for k, v in e.items() if k != "channel_name"} for e in matching[:limit]],
            "connections_total": len(connections),
            "connections_matching": len(matching),
            "users_total": len({e["user_id"] for e in connections}),
            "channels": channel_subscribers(connections),
            "processes": process_summary(connections),
            "messages_per_second": message_rate(),
            "redis": redis_summary(),
            "security_events": security.recent_events(50),
            "top_ips": security.top_ips(10),
        })
    except RedisError as exc:
        snapshot["error"] = f"Redis is unavailable: {exc}"
    return snapshot
