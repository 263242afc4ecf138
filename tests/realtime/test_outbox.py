"""The transactional outbox and its relay, against a real database and real Redis servers.

Tests that fault Redis use redis-server processes of their own (``tests.redis_servers``).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.db import IntegrityError, OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from redis.exceptions import ResponseError

from notifications.events import notification_message
from notifications.models import Notification
from notifications.services import notification_create, notification_create_many
from realtime import publish as rt_publish
from realtime import relay as rt_relay
from realtime.models import OutboxEvent
from realtime.publish import (
    Message,
    publish_json_many_on_commit,
    publish_many_on_commit,
    publish_on_commit,
    subscribe_user_on_commit,
)
from realtime.schemas import new_uuids
from realtime.storage import randomness, streams
from realtime.storage import redis as rt_redis
from tests.redis_servers import RedisServer, TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)


def history(channel: str) -> list[streams.Record]:
    entries = rt_redis.sync_client().xrange(streams.history_key(channel))
    return [streams.Record.parse(fields[b"r"]) for _, fields in entries]


def payloads(channel: str) -> list:
    return [orjson.loads(r.body)["payload"] for r in history(channel)]


def meta(channel: str) -> dict[bytes, bytes]:
    return rt_redis.sync_client().hgetall(streams.meta_key(channel))



@pytest.fixture
def own_redis(tmp_path, use_redis):
    """A redis-server of this test's own (AOF on, fsync always), used by this process."""
    server = RedisServer(tmp_path / "redis", aof=True).start()
    use_redis(server.url)
    yield server
    server.kill()


def test_a_committed_publish_is_delivered_and_its_outbox_row_deleted():
    with transaction.atomic():
        publish_on_commit("user:1", "system_event", {"n": 1})
        assert OutboxEvent.objects.count() == 1  # written in the same transaction
        assert history("user:1") == []

    assert payloads("user:1") == [{"n": 1}]
    assert rt_relay.relay().drain(5)  # the relay thread deletes delivered rows, in batches
    assert OutboxEvent.objects.count() == 0


def test_a_rolled_back_transaction_leaves_no_row_and_sends_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        publish_many_on_commit([Message("user:2", "system_event", {"n": n}) for n in range(3)])
        subscribe_user_on_commit(2, "team:2")
        raise RuntimeError("rolled back")

    assert OutboxEvent.objects.count() == 0
    assert history("user:2") == []


def test_many_messages_are_written_as_rows_of_batch_size_in_one_transaction():
    with transaction.atomic():
        publish_many_on_commit([Message(f"user:{n % 2}", "system_event", {"n": n}) for n in range(5)], batch_size=2)
        rows = list(OutboxEvent.objects.order_by("pk"))
        assert [len(orjson.loads(bytes(r.records))) for r in rows] == [2, 2, 1]

    assert [p["n"] for p in payloads("user:0")] == [0, 2, 4]
    assert [p["n"] for p in payloads("user:1")] == [1, 3]


def test_the_publish_script_appends_a_retried_message_once_and_returns_its_offset():
    client = rt_redis.sync_client()
    head, tail = b'{"type":"system_event","channel":"user:3","offset":', b',"payload":{}}'
    first = streams.publish_args("user:3", head, tail, "", "", "row-token:0")
    again = streams.publish_args("user:3", head, tail, "", "", "row-token:0")
    other = streams.publish_args("user:3", head, tail, "", "", "row-token:1")

    replies = rt_relay.publish_pipelined(client, [first, again, other])

    epoch = meta("user:3")[b"epoch"].decode()
    assert replies == [[1, epoch.encode(), 0], [1, epoch.encode(), 1], [2, epoch.encode(), 0]]
    assert [r.offset for r in history("user:3")] == [1, 2]


def test_many_messages_go_through_the_script_many_per_call_in_order():
    """More messages than one script call takes, on three channels, with a retried one: each
    reply is its own message's, and every channel's history is in order."""
    client = rt_redis.sync_client()
    items = []
    for n in range(2 * rt_relay.MESSAGES_PER_CALL + 50):
        channel = f"user:{30 + n % 3}"
        head = b'{"type":"system_event","channel":"' + channel.encode() + b'","offset":'
        items.append(streams.publish_args(channel, head, b',"payload":{"n":%d}}' % n, "", "", f"many:{n}"))
    items.append(items[7])  # a retry: appended once

    replies = rt_relay.publish_pipelined(client, items)

    assert [offset for offset, _, _ in replies[:-1]] == [n // 3 + 1 for n in range(len(items) - 1)]
    assert [duplicate for _, _, duplicate in replies] == [0] * (len(items) - 1) + [1]
    assert replies[-1][0] == replies[7][0]
    for c in range(3):
        assert [p["n"] for p in payloads(f"user:{30 + c}")] == list(range(c, len(items) - 1, 3))


def test_payloads_given_as_json_are_sent_as_the_same_bytes(monkeypatch):
    monkeypatch.setattr(randomness, "uuid4_str", lambda: str(uuid.UUID(int=7)))  # envelope ids
    monkeypatch.setattr(rt_publish, "new_uuids", lambda count: [str(uuid.UUID(int=7))] * count)  # batch ids
    monkeypatch.setattr(rt_publish, "now_iso", lambda: "2026-11-30T00:00:00.000Z")
    payloads_ = [{"n": n, "text": 'caf\u00e9 "\\ \t'} for n in range(3)]
    with transaction.atomic():
        publish_many_on_commit([Message(f"user:{n}", "system_event", p) for n, p in enumerate(payloads_)])
        publish_json_many_on_commit("system_event", [f"user:{n}" for n in range(3)],
                                    [orjson.dumps(p) for p in payloads_])
        generic, from_json = OutboxEvent.objects.order_by("pk")
        assert bytes(from_json.records) == bytes(generic.records)
    with pytest.raises(ValueError, match="invalid unread_count payload"):
        publish_json_many_on_commit("unread_count", ["user:1"], [b'{"count":"many"}'])
    with pytest.raises(ValueError, match="invalid system_event payload"):
        publish_json_many_on_commit("system_event", ["user:1"], [b'{"n":'])


def test_a_rolled_back_create_many_leaves_no_row_and_sends_nothing(make_user):
    users = [make_user() for _ in range(3)]
    with pytest.raises(RuntimeError), transaction.atomic():
        notification_create_many(users=users, type="info", title="t", message="m")
        assert Notification.objects.count() == 3 and OutboxEvent.objects.count() == 1
        raise RuntimeError("rolled back")

    assert Notification.objects.count() == 0 and OutboxEvent.objects.count() == 0
    assert all(history(f"user:{u.pk}") == [] for u in users)


@pytest.mark.parametrize("relay_thread_limit", [5000, 3], ids=["tried-at-commit", "fan-out-to-the-relay"])
def test_while_redis_is_down_create_many_is_delivered_by_the_relay_in_order(own_redis, make_user, settings,
                                                                            relay_thread_limit):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "AFTER_COMMIT_MAX_MESSAGES": relay_thread_limit}
    users = [make_user() for _ in range(3)]
    own_redis.kill()
    notification_create_many(users=users, type="info", title="first", message="")
    notification_create_many(users=users, type="info", title="second", message="")
    own_redis.start()

    assert rt_relay.relay().drain(20)

    for user in users:
        first, second = (str(pk) for pk in Notification.objects.filter(user=user).order_by("title")
                         .values_list("pk", flat=True))
        events = [orjson.loads(streams.Record.parse(f[b"r"]).body)
                  for _, f in own_redis.client().xrange(streams.history_key(f"user:{user.pk}"))]
        got = [(e["type"], e["payload"].get("id", e["payload"].get("count"))) for e in events]
        if relay_thread_limit == 3 and got[1] == ("unread_count", 2):
            # The relay computes a fan-out's counts when it sends it: by then the second
            # fan-out may have committed, and the count is already the newer one.
            got[1] = ("unread_count", 1)
        assert got == [("notification", first), ("unread_count", 1), ("notification", second), ("unread_count", 2)]
    assert OutboxEvent.objects.count() == 0


def test_a_delivery_whose_reply_was_lost_is_not_appended_twice(own_redis, use_redis):
    """Redis ran the publish but the reply never came back (the proxy swallows it): the
    attempt after commit times out, the relay retries, and the stream holds it once."""
    proxy = TcpProxy(own_redis.port)
    use_redis(proxy.url)
    publish_on_commit("user:40", "system_event", {"n": 0})  # the connection is made (and checked)
    assert rt_relay.relay().drain(5)  # and its row deleted
    proxy.swallow_replies = True
    started = time.monotonic()
    with transaction.atomic():
        publish_on_commit("user:4", "system_event", {"n": 1})
    took = time.monotonic() - started
    assert own_redis.client().xlen(streams.history_key("user:4")) == 1  # it reached Redis
    assert OutboxEvent.objects.count() == 1  # but the process does not know it
    proxy.cut()
    proxy.swallow_replies = False

    assert rt_relay.relay().drain(15)

    entries = own_redis.client().xrange(streams.history_key("user:4"))
    assert [streams.Record.parse(f[b"r"]).offset for _, f in entries] == [1]
    assert OutboxEvent.objects.count() == 0
    assert took < 0.5  # the commit waited for one short attempt only
    proxy.close()


def test_while_redis_is_down_commits_do_not_wait_and_events_follow_in_order(own_redis):
    user_channel = "user:5"
    publish_on_commit(user_channel, "system_event", {"n": 0})
    assert rt_relay.relay().drain(5)  # its row deleted
    own_redis.kill()
    durations = []
    for n in range(1, 6):
        started = time.monotonic()
        publish_on_commit(user_channel, "system_event", {"n": n})
        durations.append(time.monotonic() - started)
    assert OutboxEvent.objects.count() == 5
    own_redis.start()  # AOF: offset 1 survived

    assert rt_relay.relay().drain(20)

    assert [p["n"] for p in [orjson.loads(streams.Record.parse(f[b"r"]).body)["payload"]
                             for _, f in own_redis.client().xrange(streams.history_key(user_channel))]] == [
        1, 2, 3, 4, 5]  # the history of the new epoch (the restart changed it)
    assert OutboxEvent.objects.count() == 0
    assert max(durations[1:]) < 0.05  # once the relay knows Redis is down, not even the attempt
    assert durations[0] < 0.5


def test_a_restarted_redis_gives_channels_a_new_epoch_and_offsets_keep_growing(own_redis):
    first = rt_publish.publish_rollback_unsafe("user:6", "system_event", {"n": 1})
    own_redis.kill()
    own_redis.start()  # same data (AOF), another run id
    rt_redis.reset()

    second = rt_publish.publish_rollback_unsafe("user:6", "system_event", {"n": 2})

    assert second.epoch != first.epoch
    assert second.offset > first.offset


def test_a_promoted_replica_gives_channels_a_new_epoch(tmp_path, use_redis):
    primary = RedisServer(tmp_path / "a").start()
    replica = RedisServer(tmp_path / "b").start()
    try:
        replica.client().replicaof("127.0.0.1", primary.port)
        proxy = TcpProxy(primary.port)
        use_redis(proxy.url)
        first = rt_publish.publish_rollback_unsafe("user:7", "system_event", {"n": 1})
        deadline = time.monotonic() + 10
        while not replica.client().exists(streams.meta_key("user:7")) and time.monotonic() < deadline:
            time.sleep(0.05)
        replica.client().replicaof("no", "one")
        primary.kill()
        proxy.target_port = replica.port
        proxy.cut()

        # The pooled connection was cut: the first call may fail (it is not retried); the next reconnects.
        second = (rt_publish.publish_rollback_unsafe("user:7", "system_event", {"n": 2})
                  or rt_publish.publish_rollback_unsafe("user:7", "system_event", {"n": 3}))

        assert second is not None and second.epoch != first.epoch
        proxy.close()
    finally:
        primary.kill()
        replica.kill()


def test_rows_of_a_dead_process_are_claimed_once_their_lease_ran_out():
    head, tail = b'{"type":"system_event","channel":"user:8","offset":', b',"payload":{"n":1}}'
    records = rt_relay._encode(rt_relay.PUBLISH, [("user:8", head, tail, "", "")])
    OutboxEvent.objects.create(records=records, token="dead", claimed_by="dead-process",
                               lease_until=timezone.now() + timedelta(seconds=30))
    relay = rt_relay.Relay()
    assert relay.claim_expired() == 0  # still leased
    OutboxEvent.objects.update(lease_until=timezone.now() - timedelta(seconds=1))

    assert relay.claim_expired() == 1
    assert rt_relay.Relay().claim_expired() == 0  # another process finds it taken
    relay.drain_once()

    assert [r.offset for r in history("user:8")] == [1]
    assert OutboxEvent.objects.count() == 0


def test_discarded_events_give_their_channel_a_new_epoch_and_tell_the_hubs(settings):
    rt_publish.publish_rollback_unsafe("user:9", "system_event", {"n": 1})
    before = meta("user:9")
    pubsub = rt_redis.sync_client().pubsub()
    pubsub.subscribe(streams.pubsub_name("user:9"))
    pubsub.get_message(timeout=1)
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "OUTBOX_RETENTION_S": 60}
    head, tail = b'{"type":"system_event","channel":"user:9","offset":', b',"payload":{"n":2}}'
    relay = rt_relay.Relay()
    relay.enqueue([rt_relay.Pending(None, rt_relay.PUBLISH, [("user:9", head, tail, "", "")], "old",
                                    time.time() - 120)])
    relay.stop()  # no thread: drained by hand

    relay.drain_once()

    after = meta("user:9")
    assert after[b"epoch"] != before[b"epoch"] and after[b"offset"] == before[b"offset"] == b"1"
    assert history("user:9") == []  # nothing of the old epoch can be replayed in the new one
    notice = pubsub.get_message(timeout=1)
    assert notice["data"] == b"1\t" + after[b"epoch"] + b"\t\t\t"
    pubsub.close()


def test_notification_create_writes_row_and_event_in_one_transaction(user):
    notification = notification_create(user=user, type="info", title="t", message="m")

    assert [orjson.loads(r.body)["type"] for r in history(f"user:{user.pk}")] == ["notification", "unread_count"]
    assert orjson.loads(history(f"user:{user.pk}")[0].body)["payload"]["id"] == str(notification.id)
    assert rt_relay.relay().drain(5)
    assert OutboxEvent.objects.count() == 0
    assert Notification.objects.count() == 1


@pytest.fixture(params=["one statement", "plain"])
def write_path(request, settings) -> str:
    """Each test with it runs twice: ``write_with_insert``'s one-statement path (the default) and
    its plain path (the ORM's save and the outbox row in a transaction, the count after it)."""
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "OUTBOX_ONE_STATEMENT": request.param == "one statement"}
    return request.param


def test_a_single_notification_costs_the_committing_thread_one_round_trip(user, write_path):
    """Outside a transaction on PostgreSQL the notification, its outbox row and, after their
    COMMIT, the unread count go in one simple query; the plain path (and every other database)
    runs the two INSERTs in a transaction and the count after it. On every path the committing
    thread runs no DELETE: the relay thread deletes delivered rows in batches."""
    notification_create(user=user, type="info", title="warm-up", message="")
    with CaptureQueriesContext(connection) as queries:
        notification = notification_create(user=user, type="info", title="t", message="m")

    sqls = [q["sql"] for q in queries.captured_queries]
    if connection.vendor == "postgresql" and write_path == "one statement":
        assert len(sqls) == 1
        assert sqls[0].startswith("BEGIN; WITH business_row AS (INSERT INTO ")
        assert "RETURNING" in sqls[0] and "; COMMIT; SELECT " in sqls[0]
    else:  # Django's transaction shows as BEGIN and COMMIT
        assert [sql.split()[0].upper() for sql in sqls] == ["BEGIN", "INSERT", "INSERT", "COMMIT", "SELECT"]
    sent = [orjson.loads(r.body) for r in history(f"user:{user.pk}")]
    assert [(e["type"], e["payload"].get("count")) for e in sent] == [
        ("notification", None), ("unread_count", 1), ("notification", None), ("unread_count", 2)]
    assert payloads(f"user:{user.pk}")[-2]["id"] == str(notification.id)
    assert rt_relay.relay().drain(5)
    assert OutboxEvent.objects.count() == 0
    assert Notification.objects.get(pk=notification.pk).title == "t"


def test_both_write_paths_store_the_row_and_send_its_payload_byte_for_byte(user, write_path, monkeypatch):
    """What is stored is what the ORM stores, and what is sent is ``notification_payload`` of the
    returned notification, serialized as ``_prepared`` serializes it, then its unread count."""
    action = {"type": "open_execution", "payload": {"z": 1, "a": ["\u00e9t\u00e9", '"quoted"\\', None], "n": 1.5}}
    notification = notification_create(user=user, type="warning", title='D\u00e9ploiement "v2" \u2713',
                                       message="line\nand\ttab </script>", action=action)

    stored = Notification.objects.get(pk=notification.pk)
    assert (stored.user_id, stored.type, stored.title, stored.message, stored.action, stored.read_at,
            stored.archived_at, stored.created_at) == (user.pk, "warning", notification.title, notification.message,
                                                       action, None, None, notification.created_at)
    sent, count = history(f"user:{user.pk}")
    envelope = orjson.loads(sent.body)
    monkeypatch.setattr(randomness, "uuid4_str", lambda: envelope["id"])
    _, head, tail, _, _ = rt_publish._prepared_message(notification_message(notification), envelope["timestamp"])
    assert sent.body == head + b'%d,"epoch":"%s"' % (sent.offset, sent.epoch.encode()) + tail
    assert orjson.loads(count.body)["payload"] == {"count": 1}


def test_the_count_sent_after_a_notification_sees_what_committed_before_it(user, write_path):
    """The count runs after the notification's COMMIT: it includes that notification and every
    change committed before, here two notifications of which one was read."""
    first = notification_create(user=user, type="info", title="one", message="")
    Notification.objects.filter(pk=first.pk).update(read_at=timezone.now())
    notification_create(user=user, type="info", title="two", message="")
    notification_create(user=user, type="info", title="three", message="")

    counts = [p["count"] for r, p in zip(history(f"user:{user.pk}"), payloads(f"user:{user.pk}"), strict=True)
              if orjson.loads(r.body)["type"] == "unread_count"]
    assert counts == [1, 1, 2]


def test_the_cached_insert_is_the_statement_the_orm_compiles(user):
    notification = Notification(id=uuid.uuid4(), user=user, type="info", title="t", message="m",
                                action={"type": "x", "payload": [1, "\u00e9"]})

    cached = rt_relay._insert_sql(notification)
    compiled = rt_relay._compiled_insert_sql(notification)

    assert cached[0] == compiled[0]
    if connection.vendor == "postgresql":  # the values as they reach the server (the JSON is an adapter object)
        assert connection.ops.compose_sql(*cached) == connection.ops.compose_sql(*compiled)
    else:
        assert cached[1] == compiled[1]


def test_a_failed_insert_leaves_no_outbox_row_and_publishes_nothing(user, write_path):
    ghost = type(user)(pk=user.pk + 10_000)  # no such user: the foreign key refuses the row

    with pytest.raises(IntegrityError):
        notification_create(user=ghost, type="info", title="t", message="m")

    assert OutboxEvent.objects.count() == 0 and Notification.objects.count() == 0
    assert history(f"user:{ghost.pk}") == []


def test_an_insert_refused_before_commit_leaves_the_connection_usable(user, write_path, monkeypatch):
    """A duplicate id fails the INSERT itself, inside the one-statement path's transaction block:
    the block is rolled back, the count never runs, and the connection takes the next write."""
    first = notification_create(user=user, type="info", title="first", message="")
    monkeypatch.setattr(randomness, "random_bytes", lambda count: first.id.bytes)

    with pytest.raises(IntegrityError):
        notification_create(user=user, type="info", title="again", message="")
    monkeypatch.undo()
    notification_create(user=user, type="info", title="next", message="")

    assert sorted(Notification.objects.values_list("title", flat=True)) == ["first", "next"]
    assert [p.get("title", p.get("count")) for p in payloads(f"user:{user.pk}")] == ["first", 1, "next", 2]
    assert rt_relay.relay().drain(5)
    assert OutboxEvent.objects.count() == 0


def test_inside_a_transaction_that_rolls_back_neither_row_remains(user):
    with pytest.raises(RuntimeError), transaction.atomic():
        notification_create(user=user, type="info", title="t", message="m")
        assert OutboxEvent.objects.count() == 1
        raise RuntimeError("rolled back")

    assert OutboxEvent.objects.count() == 0 and Notification.objects.count() == 0
    assert history(f"user:{user.pk}") == []


def test_readyz_reports_a_stuck_relay(client, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "OUTBOX_STUCK_S": 5}
    OutboxEvent.objects.create(records=b"[]", token="x", created_at=timezone.now() - timedelta(seconds=60),
                               lease_until=timezone.now() + timedelta(seconds=60))

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["outbox"].startswith("failed: oldest undelivered event 60")


def test_metrics_show_outbox_depth_and_oldest_age(client):
    OutboxEvent.objects.create(records=b"[]", token="x", created_at=timezone.now() - timedelta(seconds=30),
                               lease_until=timezone.now() + timedelta(seconds=60))
    rt_relay.Relay().observe()

    text = client.get("/metrics").content.decode()

    assert "renum_realtime_outbox_depth 1.0" in text
    age = float(next(line.split()[1] for line in text.splitlines()
                     if line.startswith("renum_realtime_outbox_oldest_age_seconds ")))
    assert 30 <= age < 40


def test_rows_that_cannot_be_deleted_do_not_hold_up_delivery(own_redis, monkeypatch):
    """The relay delivers waiting rows even while its deletes fail (a database out of
    connections), and deletes them once it can."""
    publish_on_commit("user:12", "system_event", {"n": 0})
    assert rt_relay.relay().drain(5)
    own_redis.kill()
    for n in range(1, 4):
        publish_on_commit("user:12", "system_event", {"n": n})
    assert rt_relay.relay().queued == 3
    real_delete = rt_relay._delete
    failed = []

    def refused(ids):
        failed.append(ids)
        raise OperationalError("couldn't get a connection after 2.00 sec")

    monkeypatch.setattr(rt_relay, "_delete", refused)
    own_redis.start()

    deadline = time.monotonic() + 15
    while rt_relay.relay().queued and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rt_relay.relay().queued == 0  # delivered, deletes pending
    entries = own_redis.client().xrange(streams.history_key("user:12"))
    assert [orjson.loads(streams.Record.parse(f[b"r"]).body)["payload"]["n"] for _, f in entries][-3:] == [1, 2, 3]
    deadline = time.monotonic() + 5
    while not failed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert failed and OutboxEvent.objects.count() == 3

    monkeypatch.setattr(rt_relay, "_delete", real_delete)
    assert rt_relay.relay().drain(10)
    assert OutboxEvent.objects.count() == 0


def test_the_relay_command_delivers_what_waits_and_exits_with_once():
    head, tail = b'{"type":"system_event","channel":"user:10","offset":', b',"payload":{"n":1}}'
    OutboxEvent.objects.create(records=rt_relay._encode(rt_relay.PUBLISH, [("user:10", head, tail, "", "")]),
                               token="t", claimed_by="gone", lease_until=timezone.now() - timedelta(seconds=1))

    call_command("realtime_relay", "--once")

    assert payloads("user:10") == [{"n": 1}]
    assert OutboxEvent.objects.count() == 0


def test_with_the_relay_elsewhere_a_failed_row_waits_for_the_relay_command(settings, own_redis):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "RELAY_IN_PROCESS": False}
    own_redis.kill()

    publish_on_commit("user:11", "system_event", {"n": 1})

    assert rt_relay.relay().queued == 0 and rt_relay.relay()._thread is None  # no thread in this process
    assert OutboxEvent.objects.count() == 1
    own_redis.start()
    call_command("realtime_relay", "--once")

    entries = own_redis.client().xrange(streams.history_key("user:11"))
    assert [orjson.loads(streams.Record.parse(f[b"r"]).body)["payload"] for _, f in entries] == [{"n": 1}]
    assert OutboxEvent.objects.count() == 0


async def test_a_socket_on_a_channel_whose_events_were_discarded_is_closed_with_1012(connect, user):
    from asgiref.sync import sync_to_async

    _, sock, _ = await connect(user)

    await sync_to_async(rt_relay.rotate_epochs)([f"user:{user.pk}"])

    closed = await sock.communicator.receive_output(5)
    assert closed == {"type": "websocket.close", "code": 1012, "reason": "events lost; resubscribe and resync"}


def _mixed_items(prefix: str) -> list[tuple[list[str], list]]:
    """Messages on four channels, interleaved (a fan-out's notifications, then its counts), each
    with its own idempotency key, one with an audience and one with a coalesce key."""
    messages = []
    for round_ in range(3):
        for n in range(4):
            channel = f"user:{prefix}{n}"
            head = b'{"type":"system_event","channel":"' + channel.encode() + b'","offset":'
            messages.append((channel, head, b',"payload":{"r":%d,"t":"caf\xc3\xa9 \\"q\\""}}' % round_,
                             "+7,8" if n == 1 else "", "progress:1" if n == 2 else "", f"{prefix}:{round_}:{n}"))
    return streams.publish_args_many(messages)


def _stored_and_live(channels: list[str], run) -> tuple[dict, dict, Any]:
    """Each channel's history records and the records its pub/sub channel carried, while ``run()``."""
    client = rt_redis.sync_client()
    pubsub = client.pubsub()
    pubsub.subscribe(*[streams.pubsub_name(c) for c in channels])
    while pubsub.get_message(timeout=1) is not None:  # the subscribe confirmations
        pass
    result = run()
    live: dict[str, list[bytes]] = {c: [] for c in channels}
    deadline = time.monotonic() + 5
    while sum(map(len, live.values())) < sum(len(history(c)) for c in channels) and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message":
            live[message["channel"].decode().removeprefix(streams.pubsub_prefix())].append(message["data"])
    pubsub.close()
    return {c: [r.raw for r in history(c)] for c in channels}, live, result


def test_many_per_call_stores_and_publishes_the_bytes_that_one_script_call_per_message_does():
    """PUBLISH_MANY_LUA (a channel's messages grouped, its per-channel work done once) against
    PUBLISH_LUA once per message, on the same messages (same epochs): the same records in every
    history and on every pub/sub channel, in each channel's order, and the same replies, also
    for retried messages."""
    items = _mixed_items("eq")
    retried = [items[1], items[6]]  # already delivered: duplicates in both runs
    channels = [f"user:eq{n}" for n in range(4)]
    script = rt_redis.sync_script(streams.PUBLISH_LUA)

    one_by_one, live_one_by_one, replies_one_by_one = _stored_and_live(
        channels, lambda: [script(keys=keys, args=args) for keys, args in items + retried])
    for channel in channels:
        rt_redis.sync_client().delete(streams.meta_key(channel), streams.history_key(channel),
                                      streams.idempotency_key(channel))
    grouped, live_grouped, replies_grouped = _stored_and_live(
        channels, lambda: rt_relay.publish_pipelined(rt_redis.sync_client(), items + retried))

    assert grouped == one_by_one
    assert live_grouped == live_one_by_one == one_by_one
    assert replies_grouped == replies_one_by_one
    assert [duplicate for _, _, duplicate in replies_grouped] == [0] * len(items) + [1, 1]
    assert [len(one_by_one[c]) for c in channels] == [3, 3, 3, 3]


def test_a_retried_batch_is_appended_once_and_answers_the_first_offsets():
    items = _mixed_items("again")
    client = rt_redis.sync_client()

    first = rt_relay.publish_pipelined(client, items[:5])  # a delivery cut short after 5 messages
    retry = rt_relay.publish_pipelined(client, items)  # the whole batch again
    again = rt_relay.publish_pipelined(client, items)

    assert retry[:5] == [[offset, epoch, 1] for offset, epoch, _ in first]
    assert [duplicate for _, _, duplicate in retry] == [1] * 5 + [0] * (len(items) - 5)
    assert again == [[offset, epoch, 1] for offset, epoch, _ in retry]
    for n in range(4):
        records = history(f"user:again{n}")
        assert [r.offset for r in records] == [1, 2, 3]
        assert [orjson.loads(r.body)["payload"]["r"] for r in records] == [0, 1, 2]
        assert int(meta(f"user:again{n}")[b"offset"]) == 3


def test_a_call_failing_midway_keeps_what_it_appended_written_down():
    """A command that fails inside PUBLISH_MANY_LUA (here: a channel whose history key holds a
    string where its idempotency keys belong) raises, but the offsets and idempotency keys of
    what the call had appended are
    written: a retry appends only what is missing, and no offset is assigned twice."""
    items = _mixed_items("midway")
    client = rt_redis.sync_client()
    client.set(streams.idempotency_key("user:midway3"), "not a sorted set")

    with pytest.raises(ResponseError):
        rt_relay.publish_pipelined(client, items)
    assert [r.offset for r in history("user:midway0")] == [1, 2, 3]
    assert int(meta("user:midway0")[b"offset"]) == 3
    assert history("user:midway3") == []
    client.delete(streams.idempotency_key("user:midway3"))
    replies = rt_relay.publish_pipelined(client, items)

    assert [duplicate for _, _, duplicate in replies] == [0 if n % 4 == 3 else 1 for n in range(len(items))]
    for n in range(4):
        assert [r.offset for r in history(f"user:midway{n}")] == [1, 2, 3]


def test_a_fan_out_sends_each_recipient_its_notification_then_its_count(make_user):
    users = [make_user() for _ in range(3)]
    with transaction.atomic():
        notification_create_many(users=users, type="info", title="t", message="m")
        assert OutboxEvent.objects.count() == 1  # one row for the notifications; counts come after commit

    for user in users:
        records = history(f"user:{user.pk}")
        assert [orjson.loads(r.body)["type"] for r in records] == ["notification", "unread_count"]
        assert records[1].body.endswith(b',"payload":{"count":1}}')
    assert rt_relay.relay().drain(5)
    assert OutboxEvent.objects.count() == 0


def test_batch_envelope_ids_are_version_4_uuids_as_uuid4_writes_them():
    ids = new_uuids(2000)

    assert len(set(ids)) == 2000
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_batch_sent_after_redis_lost_the_script_is_appended_once_in_order():
    """More calls than one round trip takes (so later calls are in flight when the first
    replies say NOSCRIPT): what failed is repeated once, after loading the script."""
    client = rt_redis.sync_client()
    rt_relay.publish_pipelined(client, _mixed_items("warm"))  # the script is known...
    client.script_flush()  # ...and lost, as after a Redis restart
    count = 3 * rt_relay.PIPELINE_SIZE
    items = []
    for n in range(count):
        channel = f"user:flush{n % 7}"
        head = b'{"type":"system_event","channel":"' + channel.encode() + b'","offset":'
        items.append(streams.publish_args(channel, head, b',"payload":{"n":%d}}' % n, "", "", f"flush:{n}"))

    replies = rt_relay.publish_pipelined(client, items)

    assert [duplicate for _, _, duplicate in replies] == [0] * count
    for c in range(7):
        assert [p["n"] for p in payloads(f"user:flush{c}")][-10:] == list(range(c, count, 7))[-10:]
        assert [r.offset for r in history(f"user:flush{c}")][-1] == len(range(c, count, 7))


def test_a_fan_out_above_the_limit_is_delivered_by_the_relay_thread_not_the_caller(make_user, settings,
                                                                                  monkeypatch):
    """The call returns after the commit; the relay thread sends the notifications and computes
    and sends the unread counts (each recipient: its notification, then its count)."""
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "AFTER_COMMIT_MAX_MESSAGES": 3}
    users = [make_user() for _ in range(5)]
    publishing_threads = []
    real = rt_relay.publish_pipelined

    def spied(client, items):
        publishing_threads.append(rt_relay.relay()._looping is threading.current_thread())
        return real(client, items)

    monkeypatch.setattr(rt_relay, "publish_pipelined", spied)

    notification_create_many(users=users, type="info", title="t", message="m")
    assert rt_relay.relay().drain(10)

    assert publishing_threads and all(publishing_threads)  # never the caller's thread
    for user in users:
        records = history(f"user:{user.pk}")
        assert [orjson.loads(r.body)["type"] for r in records] == ["notification", "unread_count"]
        assert records[1].body.endswith(b',"payload":{"count":1}}')
    assert OutboxEvent.objects.count() == 0


def test_a_small_transaction_is_still_tried_in_the_committing_thread(make_user, monkeypatch):
    user = make_user()
    callers = []
    real = rt_relay.publish_pipelined

    def spied(client, items):
        callers.append(threading.current_thread())
        return real(client, items)

    monkeypatch.setattr(rt_relay, "publish_pipelined", spied)

    notification_create(user=user, type="info", title="t", message="m")

    assert callers == [threading.current_thread()]
    assert [orjson.loads(r.body)["type"] for r in history(f"user:{user.pk}")] == ["notification", "unread_count"]


def test_a_large_row_is_stored_compressed_and_delivered_as_it_was():
    from django.contrib.auth import get_user_model

    prefix = uuid.uuid4().hex[:8]
    users = get_user_model().objects.bulk_create(  # no password: hashing 200 would take a minute
        [get_user_model()(username=f"z{prefix}{n}", password="!") for n in range(200)])  # ~70 KB of envelopes
    with transaction.atomic():
        notification_create_many(users=users, type="info", title="t", message="m" * 50)
        [row] = OutboxEvent.objects.all()
        stored = bytes(row.records)
        assert stored[:1] == b"x"  # a zlib stream, not JSON
        assert len(stored) < rt_relay.COMPRESS_ABOVE_BYTES
        decoded = rt_relay._decode(row.kind, stored)
        assert len(decoded) == 200 and all(record[0].startswith("user:") for record in decoded)

    for user in users[:3]:
        assert [orjson.loads(r.body)["type"] for r in history(f"user:{user.pk}")] == ["notification", "unread_count"]


def test_rows_stored_before_compression_still_decode():
    records = [("user:1", b'{"type":"system_event","offset":', b',"epoch":"e"}', "", "")]
    plain = orjson.dumps([[c, h.decode(), t.decode(), a, k] for c, h, t, a, k in records])

    assert rt_relay._decode(rt_relay.PUBLISH, plain) == records
    assert rt_relay._decode(rt_relay.CONTROL, b'{"user_id":"1","message":{}}') == {"user_id": "1", "message": {}}
