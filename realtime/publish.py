"""The one way to publish: called by services, deferred to commit, serialized once.

The design's WebSocketManager, as functions. Sync code (services, management commands,
workers) uses the ``*_on_commit`` functions: inside a transaction they publish only after it
commits, and nothing is sent for a rolled-back one. ``publish_rollback_unsafe`` sends at once
and carries the danger in its name. Async code uses ``apublish`` (async code runs no
transactions of its own).

Redis being down must never fail a business write: failures are logged and counted, and a
circuit breaker skips Redis for a while instead of adding a timeout to every request. Clients
learn of the gap from the channel's epoch/offset and resync over REST.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from redis.exceptions import NoScriptError, RedisError

from realtime import metrics, streams
from realtime import redis as rt_redis
from realtime.channels import BROADCAST, user_channel
from realtime.conf import setting
from realtime.control import control_group
from realtime.schemas import envelope_parts, validate_channel_name, validate_payload

logger = logging.getLogger("realtime.publish")


@dataclass(frozen=True, slots=True)
class Published:
    """Where a message landed in its channel's stream."""

    channel: str
    offset: int
    epoch: str


class CircuitBreaker:
    """Opens after N consecutive failures; while open, calls are skipped until the cooldown ends."""

    def __init__(self, failures: int, cooldown_s: float) -> None:
        self.failures_to_open = failures
        self.cooldown_s = cooldown_s
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.total_failures = 0
        self.total_skipped = 0
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """``closed`` (normal), ``open`` (skipping) or ``half-open`` (next call is a probe)."""
        if self.consecutive_failures < self.failures_to_open:
            return "closed"
        return "open" if time.monotonic() < self.open_until else "half-open"

    # ``messages``: how many messages the call carries (a pipeline carries many); the
    # published_total metric counts messages, the breaker counts calls.

    def allow(self, messages: int = 1) -> bool:
        """Whether a call may go to Redis now."""
        if self.state == "open":
            with self._lock:
                self.total_skipped += 1
            metrics.PUBLISHED.labels("skipped").inc(messages)
            return False
        return True

    def record_success(self, messages: int = 1) -> None:
        """A call succeeded: close the circuit."""
        if self.consecutive_failures:
            metrics.CIRCUIT_OPEN.set(0)
        self.consecutive_failures = 0
        metrics.PUBLISHED.labels("ok").inc(messages)

    def record_failure(self, messages: int = 1) -> None:
        """A call failed: count it and open the circuit at the threshold."""
        with self._lock:
            self.total_failures += 1
            self.consecutive_failures += 1
            metrics.PUBLISHED.labels("failed").inc(messages)
            metrics.REDIS_ERRORS.labels("publish").inc()
            if self.consecutive_failures >= self.failures_to_open:
                self.open_until = time.monotonic() + self.cooldown_s
                metrics.CIRCUIT_OPEN.set(1)


_breaker: CircuitBreaker | None = None


def breaker() -> CircuitBreaker:
    """The process's publish circuit breaker."""
    global _breaker
    if _breaker is None:
        _breaker = CircuitBreaker(setting("CIRCUIT_FAILURES"), setting("CIRCUIT_COOLDOWN_S"))
    return _breaker


def _audience(exclude_users: Iterable[Any] = (), only_users: Iterable[Any] | None = None) -> str:
    if only_users is not None:
        return "+" + ",".join(str(u) for u in only_users)
    excluded = ",".join(str(u) for u in exclude_users)
    return "-" + excluded if excluded else ""


def _prepare(channel: str, message_type: str, payload: Any, sender: str, target: Any,
             exclude_users: Iterable[Any], coalesce_key: str = "") -> tuple[list[str], list]:
    validate_channel_name(channel)
    if "\t" in coalesce_key:
        raise ValueError("coalesce_key must not contain a tab")
    validate_payload(message_type, payload)
    only = None
    if target is not None:
        only = target if isinstance(target, (list, tuple)) else [target]
        target = [str(t) for t in only] if isinstance(target, (list, tuple)) else str(target)
    head, tail = envelope_parts(channel=channel, message_type=message_type, payload=payload,
                                sender=sender, target=target)
    return streams.publish_args(channel, head, tail, _audience(exclude_users, only), coalesce_key)


def _send(channel: str, message_type: str, keys: list[str], args: list) -> Published | None:
    cb = breaker()
    if not cb.allow():
        logger.warning("publish skipped (circuit open): channel=%s type=%s", channel, message_type)
        return None
    try:
        offset, epoch = rt_redis.sync_script(streams.PUBLISH_LUA)(keys=keys, args=args)
    except RedisError as exc:
        cb.record_failure()
        logger.error("publish failed: channel=%s type=%s error=%s", channel, message_type, exc)
        return None
    cb.record_success()
    return Published(channel, int(offset), epoch.decode())


def publish_rollback_unsafe(
    channel: str, message_type: str, payload: Any, *, sender: str = "system",
    target: Any = None, exclude_users: Iterable[Any] = (), coalesce_key: str = "",
) -> Published | None:
    """Publish now, even inside a transaction that may still roll back. Returns None when Redis failed."""
    keys, args = _prepare(channel, message_type, payload, sender, target, exclude_users, coalesce_key)
    return _send(channel, message_type, keys, args)


def publish_on_commit(
    channel: str, message_type: str, payload: Any, *, sender: str = "system",
    target: Any = None, exclude_users: Iterable[Any] = (), coalesce_key: str = "",
) -> None:
    """Publish to a channel once the current transaction commits (at once outside one).

    The payload is validated now, so a bad message fails in the caller, not after commit.
    ``coalesce_key`` marks a message that carries only the latest state of something (e.g.
    one execution's progress): a socket that is behind keeps only the newest per key.
    """
    keys, args = _prepare(channel, message_type, payload, sender, target, exclude_users, coalesce_key)
    transaction.on_commit(lambda: _send(channel, message_type, keys, args))


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a batch for ``publish_many_on_commit``."""

    channel: str
    type: str
    payload: Any
    sender: str = "system"
    coalesce_key: str = ""


def publish_many_on_commit(
    messages: Iterable[Message], *, batch_size: int = 500,
    then: Callable[[], Iterable[Message]] | None = None,
) -> None:
    """Publish many messages after commit, pipelined (one round trip per ``batch_size``).

    For fan-outs such as a notification to thousands of users; validated now, like
    ``publish_on_commit``. ``then``, when given, is called after commit and its messages go
    out after ``messages`` in the same pipeline: for what must be read after the commit (an
    unread count). If ``then`` fails, ``messages`` are still sent.
    """
    prepared = [_prepare_message(m) for m in messages]
    if not prepared and then is None:
        return

    def send() -> None:
        batch = prepared
        if then is not None:
            try:
                batch = prepared + [_prepare_message(m) for m in then()]
            except Exception:
                logger.exception("messages to publish after commit could not be computed; sending the rest")
        if batch:
            _send_many(batch, batch_size)

    transaction.on_commit(send)


def _prepare_message(m: Message) -> tuple[str, tuple[list[str], list]]:
    return m.channel, _prepare(m.channel, m.type, m.payload, m.sender, None, (), m.coalesce_key)


def _send_many(prepared: list[tuple[str, tuple[list[str], list]]], batch_size: int) -> None:
    cb = breaker()
    if not cb.allow(len(prepared)):
        logger.warning("publish of %d messages skipped (circuit open)", len(prepared))
        return
    start = 0
    try:
        for start in range(0, len(prepared), batch_size):
            _publish_pipelined([keys_args for _, keys_args in prepared[start:start + batch_size]])
    except RedisError as exc:
        if start:  # the pipelines before the failed one went through
            metrics.PUBLISHED.labels("ok").inc(start)
        cb.record_failure(len(prepared) - start)
        logger.error("publish of %d messages failed after %d: %s", len(prepared), start, exc)
        return
    cb.record_success(len(prepared))


def _publish_pipelined(items: list[tuple[list[str], list]]) -> None:
    """Run PUBLISH_LUA for each item in one pipeline, with EVALSHA.

    A Script object in a pipeline makes redis-py ask SCRIPT EXISTS first: an extra round trip
    on every batch. When Redis has lost the script (restart, SCRIPT FLUSH), only the
    publishes that failed with NOSCRIPT are repeated after loading it, so none is sent twice.
    """
    client = rt_redis.sync_client()
    script = rt_redis.sync_script(streams.PUBLISH_LUA)
    pipe = client.pipeline(transaction=False)
    for keys, args in items:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    results = pipe.execute(raise_on_error=False)
    missing = [item for item, result in zip(items, results, strict=True) if isinstance(result, NoScriptError)]
    errors = [result for result in results if isinstance(result, Exception) and not isinstance(result, NoScriptError)]
    if errors:
        raise errors[0]
    if missing:
        client.script_load(script.script)
        pipe = client.pipeline(transaction=False)
        for keys, args in missing:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        pipe.execute()


def send_to_user_on_commit(user_id: Any, message_type: str, payload: Any, *, sender: str = "system") -> None:
    """A personal message to every live connection of a user (and their history)."""
    publish_on_commit(user_channel(user_id), message_type, payload, sender=sender)


def broadcast_on_commit(message_type: str, payload: Any, *, exclude_users: Iterable[Any] = (),
                        sender: str = "system") -> None:
    """A message to every connected user except ``exclude_users``."""
    publish_on_commit(BROADCAST, message_type, payload, sender=sender, exclude_users=exclude_users)


async def apublish(
    channel: str, message_type: str, payload: Any, *, sender: str = "system",
    target: Any = None, exclude_users: Iterable[Any] = (), coalesce_key: str = "",
) -> Published | None:
    """Publish from async code, at once. Returns None when Redis failed (logged and counted)."""
    keys, args = _prepare(channel, message_type, payload, sender, target, exclude_users, coalesce_key)
    cb = breaker()
    if not cb.allow():
        logger.warning("publish skipped (circuit open): channel=%s type=%s", channel, message_type)
        return None
    try:
        offset, epoch = await rt_redis.async_script(streams.PUBLISH_LUA)(keys=keys, args=args)
    except RedisError as exc:
        cb.record_failure()
        logger.error("publish failed: channel=%s type=%s error=%s", channel, message_type, exc)
        return None
    cb.record_success()
    return Published(channel, int(offset), epoch.decode())


# ------------------------------------------------------------------ server-side membership

def _control(user_id: Any, message: dict) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    try:
        # The group holds one channel per server process; ``user_id`` picks the sockets there.
        async_to_sync(get_channel_layer().group_send)(control_group(user_id), {**message, "user_id": str(user_id)})
    except RedisError as exc:
        logger.error("control message to user %s failed: %s", user_id, exc)


def subscribe_user_on_commit(user_id: Any, channel: str) -> None:
    """Subscribe every live connection of a user to a channel, after commit (e.g. team joined)."""
    validate_channel_name(channel)
    transaction.on_commit(lambda: _control(user_id, {"type": "rt.subscribe", "channel": channel}))


def unsubscribe_user_on_commit(user_id: Any, channel: str) -> None:
    """Remove every live connection of a user from a channel, after commit (e.g. team left)."""
    validate_channel_name(channel)
    transaction.on_commit(lambda: _control(user_id, {"type": "rt.unsubscribe", "channel": channel}))


def disconnect_user_on_commit(user_id: Any, code: int = 4001, reason: str = "") -> None:
    """Close every live connection of a user, after commit (e.g. user deactivated)."""
    transaction.on_commit(lambda: _control(user_id, {"type": "rt.disconnect", "code": code, "reason": reason}))
