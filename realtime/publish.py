"""The one way to publish: called by services, written to the outbox, serialized once.

The design's WebSocketManager, as functions. Sync code (services, management commands,
workers) uses the ``*_on_commit`` functions: each writes the prepared message to the outbox
table (``realtime.models.OutboxEvent``) in the caller's transaction, and after the commit the
relay (``realtime.relay``) delivers it to Redis and deletes the row. A rolled-back transaction
sends nothing; a committed one is delivered exactly once into the channel's stream, however
long Redis is away, in commit order per process; a request never waits on Redis for more
than ``PUBLISH_ATTEMPT_TIMEOUT_S``. Outside a transaction the row is committed at once and
delivered the same way. Events that must be discarded (retention, refused by Redis) give
their channels a new epoch, so clients resync rather than miss them.

Not transactional, and saying so: ``publish_rollback_unsafe`` (sync) and ``apublish``
(async) send at once and return where the message landed, or None when Redis failed or the
circuit breaker is open; then the message is not sent at all (logged and counted) and
nothing retries it. They are for callers that need the offset now and can act on a failure
(the REST publish API answers 503, the admin's broadcast reports "failed").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from realtime import relay
from realtime.conf import setting
from realtime.core.channels import BROADCAST, user_channel
from realtime.ops import metrics
from realtime.schemas import (
    ControlDisconnect,
    ControlMessage,
    ControlSubscribe,
    ControlUnsubscribe,
    control_message,
    envelope_parts,
    envelope_parts_json,
    new_uuids,
    now_iso,
    validate_channel_name,
    validate_payload,
    validate_payload_json,
)
from realtime.storage import redis as rt_redis
from realtime.storage import streams

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


def _prepared(channel: str, message_type: str, payload: Any, sender: str, target: Any,
              exclude_users: Iterable[Any], coalesce_key: str = "", timestamp: str | None = None) -> relay.Prepared:
    validate_channel_name(channel)
    if "\t" in coalesce_key:
        raise ValueError("coalesce_key must not contain a tab")
    validate_payload(message_type, payload)
    only = None
    if target is not None:
        only = target if isinstance(target, (list, tuple)) else [target]
        target = [str(t) for t in only] if isinstance(target, (list, tuple)) else str(target)
    head, tail = envelope_parts(channel=channel, message_type=message_type, payload=payload,
                                sender=sender, target=target, timestamp=timestamp)
    return channel, head, tail, _audience(exclude_users, only), coalesce_key


def _prepare(channel: str, message_type: str, payload: Any, sender: str, target: Any,
             exclude_users: Iterable[Any], coalesce_key: str = "") -> tuple[list[str], list]:
    """PUBLISH_LUA's keys and arguments for one message published at once (no idempotency key)."""
    return streams.publish_args(*_prepared(channel, message_type, payload, sender, target, exclude_users,
                                           coalesce_key))


def _breaker_allowing(channel: str, message_type: str) -> CircuitBreaker | None:
    """The breaker when it lets an immediate publish through; None (logged) when it is open."""
    cb = breaker()
    if cb.allow():
        return cb
    logger.warning("publish skipped (circuit open): channel=%s type=%s", channel, message_type)
    return None


def _outcome(cb: CircuitBreaker, channel: str, message_type: str, reply: Any) -> Published | None:
    """Where an immediate publish landed (PUBLISH_LUA's reply), or None for its RedisError;
    the breaker learns either way."""
    if isinstance(reply, RedisError):
        cb.record_failure()
        logger.error("publish failed: channel=%s type=%s error=%s", channel, message_type, reply)
        return None
    cb.record_success()
    offset, epoch, _ = reply
    return Published(channel, int(offset), epoch.decode())


def _send(channel: str, message_type: str, keys: list[str], args: list) -> Published | None:
    cb = _breaker_allowing(channel, message_type)
    if cb is None:
        return None
    try:
        reply = rt_redis.sync_script(streams.PUBLISH_LUA)(keys=keys, args=args)
    except RedisError as exc:
        reply = exc
    return _outcome(cb, channel, message_type, reply)


def publish_rollback_unsafe(
    channel: str, message_type: str, payload: Any, *, sender: str = "system",
    target: Any = None, exclude_users: Iterable[Any] = (), coalesce_key: str = "",
) -> Published | None:
    """Publish now, even inside a transaction that may still roll back; no outbox, no retry.

    Returns where the message landed, or None when Redis failed or the circuit breaker is
    open: then it was not sent and never will be (logged, counted in
    ``renum_realtime_published_total{result="failed"|"skipped"}``). Waits up to the Redis
    client's timeouts (5 s) while Redis does not answer.
    """
    keys, args = _prepare(channel, message_type, payload, sender, target, exclude_users, coalesce_key)
    return _send(channel, message_type, keys, args)


def publish_on_commit(
    channel: str, message_type: str, payload: Any, *, sender: str = "system",
    target: Any = None, exclude_users: Iterable[Any] = (), coalesce_key: str = "",
) -> None:
    """Publish to a channel once the current transaction commits (at once outside one).

    The payload is validated now, so a bad message fails in the caller, not after commit.
    The message is written to the outbox in the caller's transaction and delivered exactly
    once after the commit, however long Redis is unavailable (``realtime.relay``).
    ``coalesce_key`` marks a message that carries only the latest state of something (e.g.
    one execution's progress): a socket that is behind keeps only the newest per key.
    """
    relay.write(relay.PUBLISH, [[_prepared(channel, message_type, payload, sender, target, exclude_users,
                                           coalesce_key)]])


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a batch for ``publish_many_on_commit``."""

    channel: str
    type: str
    payload: Any
    sender: str = "system"
    coalesce_key: str = ""


def publish_many_on_commit(
    messages: Iterable[Message], *, batch_size: int = 1000,
    then: Then | None = None,
) -> None:
    """Publish many messages after commit, pipelined, through the outbox.

    For fan-outs such as a notification to thousands of users; validated now, like
    ``publish_on_commit``, and written as outbox rows of at most ``batch_size`` messages
    (one INSERT for all of them). ``then``, when given, is called right after commit and its
    messages go out after ``messages``: for what must be read after the commit (an unread
    count). They are stored in the outbox only when they cannot be sent at once (a process
    that dies between the commit and that moment loses them; the next count replaces them).
    If ``then`` fails, ``messages`` are still sent.
    """
    _write_prepared(_prepared_messages(messages), batch_size=batch_size, then=then)


def publish_json_many_on_commit(
    message_type: str, channels: list[str], payloads: list[bytes], *, sender: str = "system",
    batch_size: int = 1000, then: Then | None = None,
) -> None:
    """``publish_many_on_commit`` of one type's messages whose payloads are already JSON.

    For payloads built from one template (a notification to many users, which differ only in
    ids): no dict per message. ``channels[i]`` gets ``payloads[i]``; each is validated now
    against the type's schema, like a payload given as a dict, and sent as the same bytes.
    """
    _write_prepared(_prepared_json(JsonMessages(message_type, channels, payloads, sender)), batch_size=batch_size,
                    then=then)


@dataclass(frozen=True, slots=True)
class JsonMessages:
    """Messages of one type whose payloads are already JSON: ``channels[i]`` gets ``payloads[i]``.

    What ``publish_json_many_on_commit`` sends, and what a ``then`` may return instead of
    ``Message`` objects (e.g. unread counts to many users, serialized without a dict each)."""

    type: str
    channels: list[str]
    payloads: list[bytes]
    sender: str = "system"


def _prepared_json(messages: JsonMessages) -> list[relay.Prepared]:
    """The messages, each validated against its type's schema like a payload given as a dict,
    and sent as the same bytes; one timestamp, and envelope ids made together."""
    timestamp = now_iso()
    message_type, sender = messages.type, messages.sender
    prepared = []
    for channel, payload, message_id in zip(messages.channels, messages.payloads,
                                            new_uuids(len(messages.channels)), strict=True):
        validate_channel_name(channel)
        validate_payload_json(message_type, payload)
        head, tail = envelope_parts_json(channel=channel, message_type=message_type, payload_json=payload,
                                         sender=sender, timestamp=timestamp, message_id=message_id)
        prepared.append((channel, head, tail, "", ""))
    return prepared


def _write_prepared(prepared: list[relay.Prepared], *, batch_size: int,
                    then: Then | None) -> None:
    if not prepared and then is None:
        return
    rows = [prepared[start:start + batch_size] for start in range(0, len(prepared), batch_size)]
    relay.write(relay.PUBLISH, rows, then=_prepared_then(then))


@dataclass(frozen=True, slots=True)
class AfterCommitQuery:
    """A ``then`` that is one query: its statement, on the database ``using``, and what turns
    its rows into the messages (an unread count: ``notifications.events``).

    The relay runs it after the commit like any ``then`` (``_prepared_then`` hands it over as a
    ``relay.QueryThen``). A write that commits by itself in one statement
    (``create_and_publish_on_commit`` outside a transaction on PostgreSQL) sends the query in
    the round trip of its commit instead, right after the COMMIT: it sees what any ``then``
    would see, one round trip sooner."""

    using: str
    sql: str
    params: Sequence[Any]
    messages: Callable[[list[tuple]], Iterable[Message] | JsonMessages]


# What may follow a transaction's messages: a function called after the commit, or one query.
Then = Callable[[], "Iterable[Message] | JsonMessages"] | AfterCommitQuery


def _prepared_then(then: Then | None) -> Callable[[], list[relay.Prepared]] | None:
    """What the relay calls after the commit: ``then``'s messages, prepared (for a query, the
    relay's ``QueryThen``, which it may run in the round trip of the commit)."""
    if then is None:
        return None
    if isinstance(then, AfterCommitQuery):
        return relay.QueryThen(then.using, then.sql, then.params,
                               lambda rows: _prepared_any(then.messages(rows)))

    return lambda: _prepared_any(then())


def _prepared_any(messages: Iterable[Message] | JsonMessages) -> list[relay.Prepared]:
    return _prepared_json(messages) if isinstance(messages, JsonMessages) else _prepared_messages(messages)


def create_and_publish_on_commit(instance: Any, messages: Iterable[Message], *,
                                 then: Then | None = None) -> None:
    """Insert ``instance`` (a new model row) and publish ``messages`` after the commit.

    The same as ``instance.save()`` and ``publish_many_on_commit(messages, then=then)`` in one
    transaction (the caller's, or its own), for the messages of one outbox row; outside a
    transaction on PostgreSQL both rows are written in one statement (``relay.write_with_insert``).
    """
    relay.write_with_insert(instance, relay.PUBLISH, [_prepared_message(m) for m in messages],
                            then=_prepared_then(then))


def _prepared_message(m: Message, timestamp: str | None = None) -> relay.Prepared:
    return _prepared(m.channel, m.type, m.payload, m.sender, None, (), m.coalesce_key, timestamp)


def _prepared_messages(messages: Iterable[Message]) -> list[relay.Prepared]:
    """The messages of one batch, prepared with one timestamp (read once, not per message)."""
    timestamp = now_iso()
    return [_prepared_message(m, timestamp) for m in messages]


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
    """Publish from async code, at once; no outbox, no retry (async code runs no transactions).

    Returns where the message landed, or None when Redis failed or the circuit breaker is
    open: then it was not sent and never will be (logged and counted), as for
    ``publish_rollback_unsafe``.
    """
    keys, args = _prepare(channel, message_type, payload, sender, target, exclude_users, coalesce_key)
    cb = _breaker_allowing(channel, message_type)
    if cb is None:
        return None
    try:
        reply = await rt_redis.async_script(streams.PUBLISH_LUA)(keys=keys, args=args)
    except RedisError as exc:
        reply = exc
    return _outcome(cb, channel, message_type, reply)


# ------------------------------------------------------------------ server-side membership
# Control messages go through the outbox too (written in the caller's transaction), and are
# delivered by the relay thread through the channel layer, at least once (each is idempotent).


def _control_on_commit(user_id: Any, message: ControlMessage) -> None:
    relay.write(relay.CONTROL, [{"user_id": str(user_id), "message": control_message(message)}])


def subscribe_user_on_commit(user_id: Any, channel: str) -> None:
    """Subscribe every live connection of a user to a channel, after commit (e.g. team joined)."""
    validate_channel_name(channel)
    _control_on_commit(user_id, ControlSubscribe(channel))


def unsubscribe_user_on_commit(user_id: Any, channel: str) -> None:
    """Remove every live connection of a user from a channel, after commit (e.g. team left)."""
    validate_channel_name(channel)
    _control_on_commit(user_id, ControlUnsubscribe(channel))


def disconnect_user_on_commit(user_id: Any, code: int = 4001, reason: str = "", *,
                              auth: str | None = None, session: str | None = None,
                              connection: str | None = None) -> None:
    """Close every live connection of a user, after commit (e.g. user deactivated).

    ``auth`` limits it to the sockets authenticated that way (``"session"``: the cookie
    sockets, not the token ones), ``session`` to those of one session (``sessions.session_tag``),
    ``connection`` to the one socket of that connection id (an operator's action): the message
    reaches every process of the user, and only the one holding that socket acts on it.
    """
    _control_on_commit(user_id, ControlDisconnect(code, reason, auth=auth, session=session, connection_id=connection))
