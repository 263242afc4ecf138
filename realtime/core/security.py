"""Suspicious-pattern accounting: auth failures, limit hits, forbidden subscriptions, bad origins.

Every event is counted per IP and per user for an hour in Redis (shared by all processes, so
limits and the admin see the whole picture). The latest ones are kept in a capped list for the
admin's security panel, and logged, at most ``SECURITY_EVENTS_PER_SOURCE_PER_MINUTE`` per
source (the IP, else the user) and kind: one address flooding bad connects must not push every
other event out of the list, nor flood the log, nor hide its own next kind of attack.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from redis.exceptions import RedisError

from realtime.conf import setting
from realtime.storage import redis as rt_redis

logger = logging.getLogger("realtime.core.security")

KINDS = ("auth_failure", "rate_limited", "forbidden", "origin_rejected", "too_large", "invalid_frames",
         "too_many_connections", "connect_flood")
RECENT_LIMIT = 500
WINDOW_S = 3600


def _k(*parts: str) -> str:
    return ":".join((setting("KEY_PREFIX"), "sec", *parts))


# KEYS = the source's per-minute counter of this kind, the recent list; ARGV = the event, the per-source
# limit, the list's size. Returns 1 when the event went into the list.
_LIST_LUA = """
local seen = redis.call('INCR', KEYS[1])
if seen == 1 then redis.call('EXPIRE', KEYS[1], 120) end
if seen > tonumber(ARGV[2]) then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 1
"""


async def record(kind: str, *, ip: str = "", user_id: str = "", detail: str = "") -> None:
    """Count one security event, and list and log it within its source's limit (never raises:
    accounting must not break a session)."""
    event = {"kind": kind, "ip": ip, "user_id": user_id, "detail": detail[:200], "at": time.time()}
    source = f"ip:{ip}" if ip else f"user:{user_id}"
    listed = 1
    try:
        listed = await rt_redis.async_script(_LIST_LUA)(
            keys=[_k("rate", source, kind, str(int(event["at"] // 60))), _k("recent")],
            args=[orjson.dumps(event), setting("SECURITY_EVENTS_PER_SOURCE_PER_MINUTE"), RECENT_LIMIT])
        pipe = rt_redis.async_client().pipeline(transaction=False)
        if ip:
            pipe.hincrby(_k("ip", ip), kind, 1)
            pipe.expire(_k("ip", ip), WINDOW_S)
            pipe.zincrby(_k("top_ips"), 1, ip)
        if user_id:
            pipe.hincrby(_k("user", user_id), kind, 1)
            pipe.expire(_k("user", user_id), WINDOW_S)
        pipe.expire(_k("top_ips"), WINDOW_S)
        await pipe.execute()
    except RedisError:
        logger.exception("could not record security event %s", kind)
    if listed:
        logger.warning("security event %s", kind,
                       extra={"event": kind, "ip": ip, "user_id": user_id, "detail": detail})


def recent_events(limit: int = 100) -> list[dict[str, Any]]:
    """The latest security events, newest first (sync; for the admin)."""
    return [orjson.loads(raw) for raw in rt_redis.sync_client().lrange(_k("recent"), 0, limit - 1)]


def counts_for_ip(ip: str) -> dict[str, int]:
    """Events of the last hour from one IP, by kind."""
    return {k.decode(): int(v) for k, v in rt_redis.sync_client().hgetall(_k("ip", ip)).items()}


def counts_for_user(user_id: str) -> dict[str, int]:
    """Events of the last hour for one user, by kind."""
    return {k.decode(): int(v) for k, v in rt_redis.sync_client().hgetall(_k("user", user_id)).items()}


def top_ips(limit: int = 20) -> list[tuple[str, int]]:
    """The IPs with the most events in the last hour."""
    rows = rt_redis.sync_client().zrevrange(_k("top_ips"), 0, limit - 1, withscores=True)
    return [(ip.decode(), int(score)) for ip, score in rows]
