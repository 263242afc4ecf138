"""The publishing API: batches, the circuit breaker, coalescing keys."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from realtime import publish as rt_publish
from realtime.publish import CircuitBreaker, Message, publish_many_on_commit, publish_rollback_unsafe
from realtime.storage import redis as rt_redis
from realtime.storage import streams
from tests.conftest import read_history

history = read_history


@pytest.mark.django_db(transaction=True)
def test_publish_many_is_pipelined_in_batches_with_per_channel_offsets():
    messages = [Message(f"user:{i % 3}", "system_event", {"n": i}) for i in range(1201)]

    with transaction.atomic():
        publish_many_on_commit(messages, batch_size=500)
        assert history("user:0") == []  # nothing before commit

    assert [r.offset for r in history("user:1")] == list(range(1, 401))
    assert [orjson_n(r) for r in history("user:2")][:3] == [2, 5, 8]


@pytest.mark.django_db(transaction=True)
def test_publish_many_after_redis_lost_its_scripts_sends_each_message_once():
    rt_redis.sync_client().script_flush()  # as after a Redis restart

    publish_many_on_commit([Message("user:8", "system_event", {"n": n}) for n in range(3)])

    assert [(r.offset, orjson_n(r)) for r in history("user:8")] == [(1, 0), (2, 1), (3, 2)]


@pytest.mark.django_db(transaction=True)
def test_messages_computed_after_commit_follow_the_batch_in_order():
    seen_in_transaction = []

    def then():
        seen_in_transaction.append(transaction.get_connection().in_atomic_block)
        return [Message("user:9", "system_event", {"n": 2})]

    with transaction.atomic():
        publish_many_on_commit([Message("user:9", "system_event", {"n": 1})], then=then)
        assert seen_in_transaction == []

    assert seen_in_transaction == [False]
    assert [orjson_n(r) for r in history("user:9")] == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_a_failing_then_still_sends_the_batch():
    def then():
        raise RuntimeError("the count query failed")

    publish_many_on_commit([Message("user:10", "system_event", {"n": 1})], then=then)

    assert [orjson_n(r) for r in history("user:10")] == [1]


def orjson_n(record: streams.Record) -> int:
    import orjson

    return orjson.loads(record.body)["payload"]["n"]


@pytest.mark.django_db(transaction=True)
def test_publish_many_sends_nothing_for_a_rolled_back_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        publish_many_on_commit([Message("user:7", "system_event", {})])
        raise RuntimeError("rollback")

    assert history("user:7") == []


def test_coalesce_key_travels_in_the_record():
    publish_rollback_unsafe("team:5", "execution_update", {
        "execution_id": "e", "team_id": "5", "status": "running", "progress": 10, "updated_at": "x"},
        coalesce_key="execution:e")

    assert history("team:5")[0].key == b"execution:e"


def test_circuit_breaker_opens_after_consecutive_failures_and_probes_after_the_cooldown():
    breaker = CircuitBreaker(failures=2, cooldown_s=0.2)

    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    time.sleep(0.25)
    assert breaker.state == "half-open" and breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert (breaker.total_failures, breaker.total_skipped) == (2, 1)


@pytest.mark.django_db(transaction=True)
def test_redis_down_never_fails_the_caller_and_the_breaker_stops_trying(settings, monkeypatch):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "CIRCUIT_FAILURES": 2, "CIRCUIT_COOLDOWN_S": 60}
    monkeypatch.setattr(rt_redis, "_sync_client", None)
    monkeypatch.setattr(rt_publish, "_breaker", None)
    monkeypatch.setattr(rt_redis, "_sync_scripts", {})

    results = [publish_rollback_unsafe("broadcast", "system_event", {"n": n}) for n in range(5)]
    started = time.monotonic()
    skipped = publish_rollback_unsafe("broadcast", "system_event", {"n": 5})

    assert results == [None] * 5
    assert skipped is None and time.monotonic() - started < 0.01  # open: no connection attempt
    assert rt_publish.breaker().total_failures == 2
    assert rt_publish.breaker().total_skipped == 4
