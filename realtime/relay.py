"""The outbox relay: delivers committed outbox rows to Redis, in order, exactly once.

``write`` inserts a row (``realtime.models.OutboxEvent``) in the caller's transaction and
registers its delivery for after the commit. Right after the commit the committing thread
makes one attempt with short timeouts (``PUBLISH_ATTEMPT_TIMEOUT_S``), and the relay thread
deletes the delivered rows, many per statement, within ``DELETE_DELAY_S``. When the attempt
fails, or while earlier rows still wait, the row goes to the relay thread, which retries with
backoff, keeps each process's rows in commit order, and deletes each row once Redis has it.
So a business write never waits on a Redis outage for longer than the attempt's timeout, and
once the relay has failed, not at all: later commits go straight to the relay's queue.

Exactly once into the stream: each message carries the idempotency key ``<row token>:<index>``
and the publish script returns the existing offset for a key the channel already holds, so a
delivery whose reply was lost (a timeout after Redis ran it) is not appended twice when retried.

Rows belong to the process that wrote them for ``OUTBOX_LEASE_S`` (renewed while its relay
holds them). The relay of any process (or ``manage.py realtime_relay``) claims rows whose lease
ran out (their process died) with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL and a
conditional UPDATE on every database, so one process delivers each. Rows that cannot be
delivered (older than ``OUTBOX_RETENTION_S``, or refused by Redis ``OUTBOX_MAX_ATTEMPTS``
times) are discarded and their channels get a new epoch (``streams.ROTATE_LUA``): clients
resync instead of silently missing them.

Control messages (server-side subscribe, unsubscribe, disconnect) go through the relay thread
only (the channel layer's timeouts are long): delivered at least once, they are idempotent.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from django.db import DatabaseError, connection, connections, models, transaction
from django.db.models import signals
from django.db.models.sql import InsertQuery
from django.utils import timezone
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError, ResponseError

from realtime.conf import setting
from realtime.models import OutboxEvent
from realtime.ops import metrics
from realtime.storage import randomness, streams
from realtime.storage import redis as rt_redis
from realtime.storage.registry import PROCESS_ID

logger = logging.getLogger("realtime.relay")

PUBLISH = OutboxEvent.Kind.PUBLISH
CONTROL = OutboxEvent.Kind.CONTROL

# A prepared publish: channel, envelope head and tail (bytes), audience, coalesce key.
Prepared = tuple[str, bytes, bytes, str, str]
# Messages sent ahead of the reply read (one round trip; on one server two round trips of half
# as many are in flight, ``_evalsha_pipelined``): a reply never waits on more messages than this.
PIPELINE_SIZE = 500
# Messages per PUBLISH_MANY_LUA call. Redis answers a call only once all its messages ran (and
# serves no other client meanwhile): at 100 per call, the attempt after commit, whose reads
# wait PUBLISH_ATTEMPT_TIMEOUT_S, timed out on a loaded machine where 25 per call did not.
MESSAGES_PER_CALL = 25
# Rows the relay sends or claims at a time.
BATCH_ROWS = 200
# Ids per DELETE/UPDATE ... IN (...): below SQLite's parameter limit.
IDS_PER_QUERY = 900
# How long a row delivered after commit may wait for its DELETE (batched by the relay thread).
DELETE_DELAY_S = 0.05


@dataclass(slots=True)
class Pending:
    """An outbox row as the process holds it: what to send, in order."""

    id: int | None
    kind: str
    records: Any  # PUBLISH: list[Prepared]; CONTROL: {"user_id": ..., "message": {...}}
    token: str
    created: float  # time.time() of the write
    attempts: int = 0
    then: Callable[[], list[Prepared]] | None = field(default=None, repr=False)


# Rows whose JSON is larger than this are stored zlib-compressed (level 1). A fan-out's row
# holds a thousand envelopes that differ in their channel and two random ids (some 440 KB):
# compressed it is about 67 KB, which the insert, the driver's escaping of bytea and the WAL
# do not have to carry.
COMPRESS_ABOVE_BYTES = 16 * 1024


def _encode(kind: str, records: Any) -> bytes:
    if kind == PUBLISH:
        data = orjson.dumps([[c, h.decode(), t.decode(), a, k] for c, h, t, a, k in records])
    else:
        data = orjson.dumps(records)
    return zlib.compress(data, 1) if len(data) > COMPRESS_ABOVE_BYTES else data


def _decode(kind: str, raw: bytes) -> Any:
    raw = bytes(raw)
    # JSON starts with '[' or '{'; a zlib stream with 0x78 ('x').
    data = orjson.loads(zlib.decompress(raw) if raw[:1] not in (b"[", b"{") else raw)
    if kind == PUBLISH:
        return [(c, h.encode(), t.encode(), a, k) for c, h, t, a, k in data]
    return data


def _lease_until() -> Any:
    lease = setting("OUTBOX_LEASE_S") if setting("RELAY_IN_PROCESS") else 0
    return timezone.now() + timedelta(seconds=lease)


def _outbox_rows(kind: str, records_per_row: list[Any]) -> list[OutboxEvent]:
    lease_until = _lease_until()
    return [OutboxEvent(kind=kind, records=_encode(kind, records), token=randomness.token_hex(16),
                        claimed_by=PROCESS_ID, lease_until=lease_until) for records in records_per_row]


def _deliver_after_commit(kind: str, rows: list[OutboxEvent], records_per_row: list[Any],
                          then: Callable[[], list[Prepared]] | None) -> None:
    now = time.time()
    pending = [Pending(row.id, kind, records, row.token, now) for row, records in zip(rows, records_per_row,
                                                                                        strict=True)]
    if then is not None:
        pending.append(Pending(None, PUBLISH, None, randomness.token_hex(16), now, then=then))
    transaction.on_commit(lambda: relay().after_commit(pending), robust=True)


def write(kind: str, records_per_row: list[Any], *,
          then: Callable[[], list[Prepared]] | None = None) -> None:
    """Insert outbox rows in the current transaction (autocommit: at once) and deliver them
    after its commit. ``then`` computes messages after the commit (unread counts): they are
    sent after the rows, and stored only when they cannot be sent at once."""
    rows = _outbox_rows(kind, records_per_row)
    if len(rows) == 1:
        rows[0].save(force_insert=True)
    elif rows:
        OutboxEvent.objects.bulk_create(rows)
    _deliver_after_commit(kind, rows, records_per_row, then)


@dataclass(frozen=True, slots=True)
class QueryThen:
    """A ``then`` computed from one query (``realtime.publish.AfterCommitQuery``, prepared):
    ``write_with_insert`` may run the query in the round trip of its commit; called, it runs
    the query on its own, after the commit like any ``then``."""

    using: str
    sql: str
    params: Sequence[Any]
    prepared: Callable[[list[tuple]], list[Prepared]]

    def __call__(self) -> list[Prepared]:
        """The messages, from the query run now."""
        with connections[self.using].cursor() as cursor:
            cursor.execute(self.sql, self.params)
            return self.prepared(cursor.fetchall())


def write_with_insert(instance: models.Model, kind: str, records: Any, *,
                      then: Callable[[], list[Prepared]] | None = None) -> None:
    """Insert ``instance`` (a new row) and one outbox row of ``records`` atomically, and
    deliver them after the commit: ``instance.save()`` and ``write`` in one transaction.

    That is the plain path, which every database takes inside a transaction. Outside one on
    PostgreSQL, for a row whose primary key is set before the insert (a UUID default) and a
    model without save signals, the one-statement path (``OUTBOX_ONE_STATEMENT``, on by
    default) writes both rows in ONE statement (``WITH <row> INSERT INTO <outbox>``, atomic by
    itself), the row's INSERT built once per model rather than by the ORM's compiler per call;
    and a ``then`` that is a query (``QueryThen``: the unread count) goes in the same round
    trip, after the COMMIT. One round trip where the plain path takes five (BEGIN, two INSERTs,
    COMMIT, the query). This is the path of a single ``notification_create``, the service's
    most frequent write.
    """
    if not (setting("OUTBOX_ONE_STATEMENT") and _one_statement_applies(instance)):
        with transaction.atomic():
            instance.save(force_insert=True)
            write(kind, [records], then=then)
        return
    [row] = _outbox_rows(kind, [records])
    business_sql, business_params = _insert_sql(instance)
    statement = f"WITH business_row AS ({business_sql}) {_outbox_insert_sql()}"
    params = (*business_params, row.kind, row.records, row.token, row.created_at, row.claimed_by,
              row.lease_until, row.attempts)
    with connection.cursor() as cursor:
        if isinstance(then, QueryThen) and then.using == connection.alias:
            row.id, then_rows = _commit_then_query(cursor, statement, params, then)
            then = functools.partial(then.prepared, then_rows)  # computed where any ``then`` is
        else:
            cursor.execute(statement, params)
            row.id = cursor.fetchone()[0]
    for saved in (instance, row):
        saved._state.adding, saved._state.db = False, connection.alias
    _deliver_after_commit(kind, [row], [records], then)


def _one_statement_applies(instance: models.Model) -> bool:
    model = type(instance)
    return (connection.vendor == "postgresql" and connection.get_autocommit() and instance.pk is not None
            and not signals.pre_save.has_listeners(model) and not signals.post_save.has_listeners(model))


def _commit_then_query(cursor: Any, statement: str, params: tuple, then: QueryThen) -> tuple[int, list[tuple]]:
    """Run ``statement`` (returning the outbox row's id) in a transaction of its own and, after its
    COMMIT, ``then``'s query: four statements in one simple query, one round trip. Returns the
    id and the query's rows.

    The BEGIN makes the COMMIT end a transaction block the server knows of (a COMMIT of the
    implicit block of a multi-statement query would log a warning every time). PostgreSQL
    stops at the first failing statement: when the INSERT fails, the block is left aborted and
    is rolled back here; a failed COMMIT (a deferred foreign key) has ended it already. Either
    way the query does not run.
    """
    try:
        cursor.execute(f"BEGIN; {statement}; COMMIT; {then.sql}", (*params, *then.params))
    except DatabaseError:
        with contextlib.suppress(Exception):  # the connection may be gone; Django discards it then
            connection.connection.rollback()  # a no-op when no transaction is left open
        raise
    cursor.nextset()  # past BEGIN: the INSERT's RETURNING
    row_id = cursor.fetchone()[0]
    cursor.nextset()  # COMMIT
    cursor.nextset()
    return row_id, cursor.fetchall()


@functools.cache
def _outbox_insert_sql() -> str:
    """INSERT of one outbox row, returning its id (PostgreSQL; built once, not per call)."""
    quote = connection.ops.quote_name
    columns = ("kind", "records", "token", "created_at", "claimed_by", "lease_until", "attempts")
    return (f"INSERT INTO {quote(OutboxEvent._meta.db_table)} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))}) RETURNING {quote(OutboxEvent._meta.pk.column)}")


def _insert_sql(instance: models.Model) -> tuple[str, tuple]:
    """The INSERT that ``save(force_insert=True)`` would run for ``instance`` (values prepared).

    The statement is built once per model (``_insert_statement``) and the values prepared as
    the ORM's insert compiler prepares them (``pre_save``, then ``get_db_prep_save``); a value
    that is an expression, or a model with a field that chooses its own placeholder, goes
    through the compiler (``_compiled_insert_sql``)."""
    statement = _insert_statement(type(instance))
    if statement is None:
        return _compiled_insert_sql(instance)
    sql, fields = statement
    values = []
    for model_field in fields:
        value = model_field.pre_save(instance, True)
        if hasattr(value, "resolve_expression"):
            return _compiled_insert_sql(instance)
        values.append(model_field.get_db_prep_save(value, connection=connection))
    return sql, tuple(values)


def _inserted_fields(model: type[models.Model]) -> list[models.Field]:
    return [f for f in model._meta.local_concrete_fields if not getattr(f, "generated", False)]


@functools.cache
def _insert_statement(model: type[models.Model]) -> tuple[str, list[models.Field]] | None:
    """``INSERT INTO <table> (<columns>) VALUES (%s, ...)`` of a model and its fields in that
    order (PostgreSQL); None when a field has a placeholder of its own (``get_placeholder``)."""
    fields = _inserted_fields(model)
    if any(hasattr(field, "get_placeholder") for field in fields):
        return None
    quote = connection.ops.quote_name
    return (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))})", fields)


def _compiled_insert_sql(instance: models.Model) -> tuple[str, tuple]:
    """The INSERT of ``instance`` from the ORM's insert compiler."""
    query = InsertQuery(type(instance))
    query.insert_values(_inserted_fields(type(instance)), [instance])
    [(sql, params)] = query.get_compiler(connection=connection).as_sql()
    return sql, tuple(params)


# ---------------------------------------------------------------------- Redis side


def _publish_items(rows: Iterable[Pending]) -> list[tuple[list[str], list]]:
    return streams.publish_args_many((channel, head, tail, audience, key, f"{row.token}:{index}")
                                     for row in rows
                                     for index, (channel, head, tail, audience, key) in enumerate(row.records))


def publish_pipelined(client: Any, items: list[tuple[list[str], list]]) -> list[Any]:
    """Run PUBLISH_LUA for each item, each channel's items in their order, PIPELINE_SIZE
    messages per round trip; returns the replies, in the items' order. Raises the first error
    (what succeeded stays succeeded, and its idempotency keys make a retry harmless).

    On one server the items go MESSAGES_PER_CALL at a time through PUBLISH_MANY_LUA (the same
    publish, in one script call): Redis runs one script call, and redis-py packs one command
    and parses one reply, per MESSAGES_PER_CALL messages instead of per message; a channel's
    items are sent next to each other (``_grouped_by_channel``), so that the script does its
    per-channel work once for them.
    """
    if isinstance(client, RedisCluster):
        return _publish_per_node(client, items)
    order = _grouped_by_channel(items)
    grouped = items if order is None else [items[i] for i in order]
    calls = []
    for start in range(0, len(grouped), MESSAGES_PER_CALL):
        chunk = grouped[start:start + MESSAGES_PER_CALL]
        calls.append(([key for keys, _ in chunk for key in keys], [arg for _, args in chunk for arg in args]))
    replies: list[Any] = []
    for reply in _evalsha_pipelined(client, streams.PUBLISH_MANY_LUA, calls, PIPELINE_SIZE // MESSAGES_PER_CALL // 2):
        replies.extend(reply)
    if order is None:
        return replies
    in_order: list[Any] = [None] * len(items)
    for position, index in enumerate(order):
        in_order[index] = replies[position]
    return in_order


def _grouped_by_channel(items: list[tuple[list[str], list]]) -> list[int] | None:
    """The items' indexes with each channel's items next to each other (in their order, the
    channels in the order of their first item), or None when they already are.

    Each channel's messages keep their order, which is the only order there is to keep (a
    stream per channel): PUBLISH_MANY_LUA then does its per-channel work once for a channel's
    consecutive messages (e.g. a notification and the unread count that follows it, which a
    fan-out sends as two rows far apart)."""
    positions: dict[str, list[int]] = {}
    last = None
    regrouped = False
    for index, (keys, _) in enumerate(items):
        meta = keys[0]
        group = positions.get(meta)
        if group is None:
            positions[meta] = [index]
        else:
            regrouped = regrouped or meta != last
            group.append(index)
        last = meta
    if not regrouped:
        return None
    return [index for group in positions.values() for index in group]


def _evalsha_pipelined(client: Any, source: str, calls: list[tuple[list[str], list]], per_round_trip: int) -> list[Any]:
    """Run a script once per call, ``per_round_trip`` calls per round trip, with EVALSHA, in
    order on one connection; returns the replies, raising the first error once the calls sent
    ran (none is sent after a call that failed).

    The next ``per_round_trip`` calls are sent before the replies of the previous ones are read,
    so Redis runs one group while this process reads the replies of the one before and packs the
    one after (one after the other, a large batch took the sum of both). A Script object in a
    pipeline would make redis-py ask SCRIPT EXISTS first: an extra round trip on every batch.
    When Redis has lost the script (restart, SCRIPT FLUSH), only the calls that failed with
    NOSCRIPT are repeated after loading it, so none is run twice.
    """
    sha = rt_redis.sync_script(source).sha
    replies: list[Any] = []
    pool = client.connection_pool
    connection = pool.get_connection()
    in_flight: deque[list[tuple[list[str], list]]] = deque()
    position = 0

    failed = False

    def send_next() -> None:
        nonlocal position
        chunk = calls[position:position + per_round_trip]
        if chunk and not failed:
            position += len(chunk)
            connection.send_packed_command(connection.pack_commands(
                [("EVALSHA", sha, len(keys), *keys, *args) for keys, args in chunk]))
            in_flight.append(chunk)

    def read(chunk: list) -> list[Any]:
        results: list[Any] = []
        for _ in chunk:
            try:
                results.append(connection.read_response())
            except ResponseError as exc:
                results.append(exc)
        return results

    try:
        send_next()
        while in_flight:
            send_next()
            chunk = in_flight.popleft()
            results = read(chunk)
            if any(isinstance(result, NoScriptError) for result in results):
                # What was sent after these runs first: read it, then repeat what failed, in order.
                done = [(chunk, results)] + [(later, read(later)) for later in in_flight]
                in_flight.clear()
                connection.send_command("SCRIPT", "LOAD", rt_redis.script_source(source))
                connection.read_response()
                chunk = [call for sent, got in done for call in sent]
                results = [result for _, got in done for result in got]
                missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
                connection.send_packed_command(connection.pack_commands(
                    [("EVALSHA", sha, len(chunk[i][0]), *chunk[i][0], *chunk[i][1]) for i in missing]))
                for i, result in zip(missing, read(missing), strict=True):
                    results[i] = result
            replies.extend(results)
            # After an error nothing more is sent (what is in flight is read): a channel's later
            # messages must not overtake the one that failed; the relay retries the batch.
            failed = failed or any(isinstance(result, Exception) for result in results)
            if not in_flight:  # after a NOSCRIPT every call sent was read: go on with the next
                send_next()
    except BaseException:
        connection.disconnect()  # replies may still be on their way: never reuse the socket
        raise
    finally:
        pool.release(connection)
    for result in replies:
        if isinstance(result, Exception):
            raise result
    return replies


def _publish_per_node(cluster: Any, items: list[tuple[list[str], list]]) -> list[Any]:
    """``publish_pipelined`` on a Redis Cluster, whose pipelines refuse scripts: the items of
    each node go through a pipeline of that node's own connection, one PUBLISH_LUA per item
    (each item's keys share the slot of its channel; the items of one call would not), and
    the replies come back in the items' order."""
    by_node: dict[str, tuple[Any, list[int]]] = {}
    for index, (keys, _) in enumerate(items):
        node = cluster.get_node_from_key(keys[0])
        by_node.setdefault(node.name, (node.redis_connection, []))[1].append(index)
    replies: list[Any] = [None] * len(items)
    failure: Exception | None = None
    for node_client, indexes in by_node.values():
        try:
            for index, reply in zip(indexes, _evalsha_pipelined(node_client, streams.PUBLISH_LUA,
                                                                [items[i] for i in indexes], PIPELINE_SIZE // 2),
                                    strict=True):
                replies[index] = reply
        except Exception as exc:  # the other nodes still get theirs; retries are idempotent
            failure = failure or exc
    if failure is not None:
        raise failure
    return replies


def _control(records: dict, timeout: float | None = None) -> None:
    """Send a control message through the channel layer (within ``timeout`` seconds, if given)."""
    import asyncio

    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from realtime.fanout.control import control_group

    user_id = records["user_id"]

    async def send() -> None:
        # The group holds one channel per server process; ``user_id`` picks the sockets there.
        sending = get_channel_layer().group_send(control_group(user_id), {**records["message"],
                                                                          "user_id": str(user_id)})
        await (asyncio.wait_for(sending, timeout) if timeout is not None else sending)

    async_to_sync(send)()


def rotate_epochs(channels: Iterable[str]) -> None:
    """Give channels a new epoch now (their events were discarded): clients resync."""
    script = rt_redis.sync_script(streams.ROTATE_LUA)
    for channel in dict.fromkeys(channels):
        keys, args = streams.rotate_args(channel)
        script(keys=keys, args=args)
        metrics.EPOCHS_ROTATED.inc()
        logger.warning("channel %s got a new epoch: some of its events were discarded", channel)


def _delete(ids: list[int]) -> None:
    # One plain DELETE per chunk: QuerySet.delete() would first load the rows (and their
    # serialized messages) whenever any pre/post_delete receiver is connected in the project.
    # On PostgreSQL the DELETE does not wait for its WAL flush (synchronous_commit off for this
    # transaction only): a delete lost in a crash only makes the relay send the row again, which
    # the idempotency key turns into a no-op. The business write paid the one durable commit.
    if not ids:
        return
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    postgresql = connection.vendor == "postgresql"
    with transaction.atomic() if postgresql else contextlib.nullcontext(), connection.cursor() as cursor:
        if postgresql:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[start:start + IDS_PER_QUERY]
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(chunk))})", chunk)


# ---------------------------------------------------------------------- the relay


class Relay:
    """The process's relay: a queue of rows in commit order and the thread that drains it."""

    def __init__(self) -> None:
        self._queue: deque[Pending] = deque()  # publishes, in commit order
        self._controls: deque[Pending] = deque()  # control messages (another path: no order with publishes)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._delivered: list[int] = []  # rows delivered after commit, deleted by the thread
        self._delivered_since = 0.0
        self._looping: threading.Thread | None = None  # the thread in ``run_forever``
        self._stopping = False
        self.healthy = True  # False from a failed delivery until the relay delivers again
        self.delivered = 0

    # -------------------------------------------------------------- after commit

    def after_commit(self, pending: list[Pending]) -> None:
        """Deliver a transaction's rows now when Redis answers quickly, else hand them to the thread."""
        controls = [p for p in pending if p.kind == CONTROL]
        if controls:
            self._controls_after_commit(controls)
            pending = [p for p in pending if p.kind == PUBLISH]
            if not pending:
                return
        if setting("RELAY_IN_PROCESS") and \
                sum(len(p.records) for p in pending if p.records) > setting("AFTER_COMMIT_MAX_MESSAGES"):
            # A fan-out: the business write has committed, its delivery takes seconds of Redis
            # work. The relay thread sends it, and computes ``then`` (the unread counts) first;
            # a process that dies before that loses those counts (state that the next count and
            # every reload correct), never the stored rows.
            self.enqueue(pending)
            return
        if self.healthy and not self._queue:
            try:
                self._resolve_then(pending)
                publish_pipelined(rt_redis.fast_client(), _publish_items(pending))
            except RedisError as exc:
                self.healthy = False
                metrics.REDIS_ERRORS.labels("publish").inc()
                logger.warning("publish after commit failed (%s); the relay delivers it", exc)
            else:
                metrics.PUBLISHED.labels("ok").inc(sum(len(p.records) for p in pending))
                self._delete_soon([p.id for p in pending if p.id is not None])
                return
        self._resolve_then(pending)
        self._store_then(pending)
        self.enqueue(pending)

    def _delete_soon(self, ids: list[int]) -> None:
        """Delete delivered rows: by the relay thread, many per statement, within
        ``DELETE_DELAY_S`` (the committing thread pays no second transaction); at once when no
        relay thread runs in this process. A row whose delete is lost with the process is sent
        again by another one, which the idempotency key turns into a no-op."""
        if not ids:
            return
        if not setting("RELAY_IN_PROCESS"):
            try:
                _delete(ids)
            except DatabaseError:  # delivered; the relay command deletes it (a resend is a no-op)
                logger.exception("delivered outbox rows could not be deleted")
            return
        first = self._defer_delete(ids)
        self.start()
        if first or len(self._delivered) >= BATCH_ROWS:
            self._wake.set()

    def _defer_delete(self, ids: list[int]) -> bool:
        """Add delivered rows to those the thread deletes; True when none waited before."""
        with self._lock:
            first = not self._delivered
            if first:
                self._delivered_since = time.monotonic()
            self._delivered.extend(ids)
        return first

    def _delete_delivered_rows(self, ids: list[int]) -> None:
        """Rows the relay delivered: deleted with the others by its loop (``run_forever``), or
        now when drained by hand (``realtime_relay --once``, tests)."""
        if self._looping is threading.current_thread():
            self._defer_delete(ids)
        else:
            _delete(ids)

    def _delete_delivered(self, force: bool = False) -> None:
        """The relay thread's part of ``_delete_soon``: once the oldest id waited ``DELETE_DELAY_S``."""
        with self._lock:
            if not self._delivered or not (force or len(self._delivered) >= BATCH_ROWS
                                            or time.monotonic() - self._delivered_since >= DELETE_DELAY_S):
                return
            ids = list(self._delivered)  # kept there until deleted (``drain`` waits for them)
        try:
            _delete(ids)
        except Exception:
            with self._lock:  # tried again next round
                self._delivered_since = time.monotonic()
            raise
        with self._lock:
            del self._delivered[:len(ids)]
            self._delivered_since = time.monotonic()

    def _delete_at_exit(self) -> None:
        # The daemon thread dies with the interpreter: rows delivered in its last moments are
        # deleted here rather than claimed and sent again (a no-op) by another process.
        try:
            self._delete_delivered(force=True)
        except Exception as exc:  # e.g. the database is already gone: the resend is harmless
            logger.warning("%d delivered outbox rows left for another relay to resend as no-ops (%s)",
                           len(self._delivered), exc)

    def _controls_after_commit(self, controls: list[Pending]) -> None:
        # Like publishes: one attempt within the short timeout, the rest to the thread. A
        # message whose attempt timed out after reaching Redis may arrive twice (idempotent).
        sent: list[Pending] = []
        if self.healthy and not self._controls:
            try:
                for row in controls:
                    _control(row.records, setting("PUBLISH_ATTEMPT_TIMEOUT_S"))
                    sent.append(row)
            except (RedisError, OSError, TimeoutError) as exc:
                self.healthy = False
                metrics.REDIS_ERRORS.labels("control").inc()
                logger.warning("control message after commit failed (%s); the relay delivers it", exc)
            self._delete_soon([row.id for row in sent])
        waiting = controls[len(sent):]
        if waiting:
            self.enqueue(waiting)

    def _resolve_then(self, pending: list[Pending]) -> None:
        for row in pending:
            if row.then is not None:
                then, row.then = row.then, None
                try:
                    row.records = then()
                except Exception:
                    logger.exception("messages to publish after commit could not be computed; sending the rest")
                    row.records = []

    def _store_then(self, pending: list[Pending]) -> None:
        # Messages computed after commit (unread counts) that could not go at once: stored
        # with the token they were tried with, so a try that did reach Redis is not repeated.
        for row in pending:
            if row.id is None and row.records:
                try:
                    stored = OutboxEvent.objects.create(kind=PUBLISH, records=_encode(PUBLISH, row.records),
                                                        token=row.token, claimed_by=PROCESS_ID,
                                                        lease_until=_lease_until())
                    row.id = stored.id
                except DatabaseError:
                    logger.exception("messages computed after commit could not be stored; kept in memory")

    def enqueue(self, pending: list[Pending]) -> None:
        """Queue rows for the relay thread, behind those already waiting.

        With RELAY_IN_PROCESS off the rows stay in the database only, claimable at once by
        ``manage.py realtime_relay``, and every later commit still makes its one short attempt
        (it could then overtake rows that wait for that relay)."""
        if not setting("RELAY_IN_PROCESS"):
            self.healthy = True
            return
        with self._lock:
            for row in pending:
                if row.records or row.then is not None:
                    (self._controls if row.kind == CONTROL else self._queue).append(row)
        self.start()
        self._wake.set()

    # -------------------------------------------------------------- the thread

    def start(self) -> None:
        """Start the relay thread (once per process; a no-op when RELAY_IN_PROCESS is off)."""
        if self._thread is not None or not setting("RELAY_IN_PROCESS"):
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self.run_forever, name="realtime-relay", daemon=True)
                self._thread.start()
                atexit.register(self._delete_at_exit)

    def stop(self, timeout: float = 6.0) -> None:
        """Make ``run_forever`` return, and wait for the thread (tests, the management command)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run_forever(self) -> None:
        """Drain the queue, claim rows of dead processes, renew leases; until ``stop``."""
        self._looping = threading.current_thread()
        poll = setting("RELAY_POLL_S")
        backoff = 0.0
        next_claim = next_renew = 0.0
        while not self._stopping:
            wait = backoff if backoff else 0 if (self._queue or self._controls) else poll
            if self._delivered:
                wait = min(wait, max(0.0, self._delivered_since + DELETE_DELAY_S - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()
            if self._stopping:
                break
            now = time.monotonic()
            try:
                self._delete_delivered()
                if now >= next_claim:
                    next_claim = now + poll
                    self.claim_expired()
                    self.observe()
                if now >= next_renew and (self._queue or self._controls):
                    next_renew = now + setting("OUTBOX_LEASE_S") / 3
                    self._renew()
                if self._controls:
                    self.drain_controls()
                if self._queue:
                    self.drain_once()
                backoff = 0.0
            except RedisError as exc:
                self.healthy = False
                metrics.REDIS_ERRORS.labels("relay").inc()
                backoff = min(max(backoff * 2, 0.05), 1.0)
                logger.warning("relay: Redis unavailable (%s); %d rows wait; retrying in %.2fs",
                               exc, len(self._queue), backoff)
            except DatabaseError as exc:
                logger.warning("relay: database unavailable (%s); retrying", exc)
                connection.close()
                backoff = min(max(backoff * 2, 0.05), 1.0)
            except Exception:
                logger.exception("relay: unexpected failure; retrying")
                backoff = min(max(backoff * 2, 0.05), 1.0)
            if not (self._queue or self._controls or self._delivered):
                # An idle relay holds no database connection (nor blocks a test database's drop).
                connection.close()
        self._delete_at_exit()
        atexit.unregister(self._delete_at_exit)
        self._looping = None
        connection.close()

    def drain_once(self) -> int:
        """Send the rows at the head of the queue (in order) and delete them; returns how many."""
        with self._lock:
            batch = []
            for row in self._queue:
                batch.append(row)
                if len(batch) >= BATCH_ROWS:
                    break
        if not batch:
            return 0
        self._resolve_then(batch)  # a fan-out's unread counts, handed over uncomputed (``after_commit``)
        batch = self._discard_expired(batch)
        try:
            self._publish_rows(batch)
        except Exception:
            self._store_then(batch)  # computed now: kept in the outbox like any row while Redis is away
            raise
        # Delivered: off the queue at once, deleted with the others (``_delete_soon``), so a
        # database that is slow or out of connections never holds up delivery from Redis's side.
        with self._lock:
            for _ in batch:
                self._queue.popleft()
        self._delete_delivered_rows([row.id for row in batch if row.id is not None])
        self.healthy = True
        self.delivered += len(batch)
        return len(batch)

    def drain_controls(self) -> int:
        """Send the waiting control messages through the channel layer and delete their rows."""
        with self._lock:
            batch = list(self._controls)[:BATCH_ROWS]
        oldest = time.time() - setting("OUTBOX_RETENTION_S")
        for row in batch:
            if row.created >= oldest:
                _control(row.records)
            else:
                logger.error("outbox control row %s discarded: older than OUTBOX_RETENTION_S", row.id)
                metrics.OUTBOX_DISCARDED.inc()
        with self._lock:
            for _ in batch:
                self._controls.popleft()
        self._delete_delivered_rows([row.id for row in batch if row.id is not None])
        self.healthy = True
        return len(batch)

    def _publish_rows(self, rows: list[Pending]) -> None:
        try:
            publish_pipelined(rt_redis.sync_client(), _publish_items(rows))
        except ResponseError as exc:
            # Redis refused a message itself (not a connection failure): count it against
            # every row of the run, and discard those that reach the limit.
            for row in rows:
                row.attempts += 1
            doomed = [row for row in rows if row.attempts >= setting("OUTBOX_MAX_ATTEMPTS")]
            if doomed:
                self._discard(doomed, f"refused by Redis {setting('OUTBOX_MAX_ATTEMPTS')} times: {exc}")
                remaining = [row for row in rows if row not in doomed]
                if remaining:
                    self._publish_rows(remaining)
                return
            raise
        metrics.PUBLISHED.labels("ok").inc(sum(len(row.records) for row in rows))

    def _discard_expired(self, batch: list[Pending]) -> list[Pending]:
        oldest = time.time() - setting("OUTBOX_RETENTION_S")
        expired = [row for row in batch if row.created < oldest]
        if expired:
            self._discard(expired, f"older than OUTBOX_RETENTION_S ({setting('OUTBOX_RETENTION_S')} s)")
        return batch

    def _discard(self, rows: list[Pending], why: str) -> None:
        """Drop undeliverable rows: their channels get a new epoch first, so clients resync."""
        channels = [channel for row in rows if row.kind == PUBLISH for channel, *_ in row.records]
        rotate_epochs(channels)
        for row in rows:
            logger.error("outbox row %s discarded (%s): %d messages", row.id, why,
                         len(row.records) if row.kind == PUBLISH else 1)
            metrics.OUTBOX_DISCARDED.inc()
            row.kind, row.records = PUBLISH, []  # sent as nothing, deleted with the batch

    def _renew(self) -> None:
        with self._lock:
            ids = [row.id for row in (*self._queue, *self._controls) if row.id is not None]
        until = timezone.now() + timedelta(seconds=setting("OUTBOX_LEASE_S"))
        for start in range(0, len(ids), IDS_PER_QUERY):
            OutboxEvent.objects.filter(pk__in=ids[start:start + IDS_PER_QUERY]).update(
                lease_until=until, claimed_by=PROCESS_ID)

    def claim_expired(self) -> int:
        """Take over rows whose lease ran out (a process died, or nobody relays); returns how many."""
        now = timezone.now()
        if not OutboxEvent.objects.filter(lease_until__lt=now).exists():
            return 0  # the usual case, without a write transaction
        with self._lock:
            held = {row.id for row in (*self._queue, *self._controls)} | set(self._delivered)
        with transaction.atomic():
            candidates = OutboxEvent.objects.filter(lease_until__lt=now).order_by("pk")
            if connection.features.has_select_for_update_skip_locked:
                candidates = candidates.select_for_update(skip_locked=True)
            ids = [pk for pk in candidates.values_list("pk", flat=True)[:BATCH_ROWS] if pk not in held]
            if not ids:
                return 0
            until = now + timedelta(seconds=setting("OUTBOX_LEASE_S"))
            OutboxEvent.objects.filter(pk__in=ids, lease_until__lt=now).update(claimed_by=PROCESS_ID,
                                                                                lease_until=until)
            rows = list(OutboxEvent.objects.filter(pk__in=ids, claimed_by=PROCESS_ID, lease_until=until)
                        .order_by("pk"))
        claimed = [Pending(row.id, row.kind, _decode(row.kind, row.records), row.token,
                           row.created_at.timestamp()) for row in rows]
        if claimed:
            logger.warning("relay claimed %d outbox rows whose lease had run out", len(claimed))
            with self._lock:
                for row in claimed:
                    (self._controls if row.kind == CONTROL else self._queue).append(row)
        return len(claimed)

    def observe(self) -> None:
        """Set the outbox gauges (rows waiting, age of the oldest) from the database."""
        depth, oldest = outbox_state()
        metrics.OUTBOX_DEPTH.set(depth)
        metrics.OUTBOX_OLDEST_AGE.set(oldest)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until this process's queue is empty (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while (self._queue or self._controls or self._delivered) and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)
        return not (self._queue or self._controls or self._delivered)

    @property
    def queued(self) -> int:
        """Rows this process holds for delivery."""
        return len(self._queue) + len(self._controls)


def outbox_state() -> tuple[int, float]:
    """(rows waiting in the outbox, age in seconds of the oldest; 0 when empty), of every process."""
    from django.db.models import Count, Min

    state = OutboxEvent.objects.aggregate(depth=Count("pk"), oldest=Min("created_at"))
    oldest = state["oldest"]
    return state["depth"], (timezone.now() - oldest).total_seconds() if oldest else 0.0


_relay: Relay | None = None
_relay_lock = threading.Lock()


def reset() -> None:
    """Stop the process's relay thread and forget it (tests)."""
    global _relay
    with _relay_lock:
        current, _relay = _relay, None
    if current is not None:
        current.stop()


def relay() -> Relay:
    """The process's relay."""
    global _relay
    if _relay is None:
        with _relay_lock:
            if _relay is None:
                _relay = Relay()
    return _relay
