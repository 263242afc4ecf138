"""Rate limits: a token bucket per connection for commands; connect attempts per IP across processes."""

from __future__ import annotations

import logging
import time
from collections import Counter

from redis.exceptions import RedisError

from realtime.conf import setting
from realtime.fanout.batching import PerLoop
from realtime.storage import redis as rt_redis

logger = logging.getLogger("realtime.core.limits")


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved; ``take()`` spends one if available."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False when the bucket is empty."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def seconds_until_token(self) -> float:
        """How long until the next token is available."""
        return max(0.0, (1 - self.tokens) / self.rate)


async def connect_attempt(ip: str) -> int:
    """Count a connect attempt from an IP; the seconds to wait when over the per-minute limit, else 0.

    Counted in Redis per minute window, so the limit holds across every server process; the
    attempts of a connect storm are counted together (``_count_attempts``). Fails open: with
    Redis unreachable, connects are not refused for this reason.
    """
    limit = setting("CONNECTS_PER_IP_PER_MINUTE")
    if not limit or not ip or ip in setting("CONNECT_LIMIT_EXEMPT_IPS"):
        return 0
    window = int(time.time() // 60)
    try:
        count = await _attempts.submit(f"{setting('KEY_PREFIX')}:connrate:{ip}:{window}")
    except RedisError as exc:
        logger.warning("connect rate limit unavailable: %s", exc)
        return 0
    if count > limit:
        if count == limit + 1:
            from realtime.core import security

            await security.record("connect_flood", ip=ip, detail=f"more than {limit} connects in a minute")
        return 60 - int(time.time() % 60)
    return 0


async def _count_attempts(keys: list[str]) -> list[int]:
    """INCRBY each distinct key once; each attempt gets its own number within the key's count."""
    per_key = Counter(keys)
    pipe = rt_redis.async_client().pipeline(transaction=False)
    for key, attempts in per_key.items():
        pipe.incrby(key, attempts)
        pipe.expire(key, 120)
    results = await pipe.execute()
    first = {key: results[2 * i] - per_key[key] for i, key in enumerate(per_key)}
    numbers = []
    for key in keys:
        first[key] += 1
        numbers.append(first[key])
    return numbers


_attempts: PerLoop[str, int] = PerLoop(_count_attempts)
