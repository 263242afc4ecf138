"""Health and readiness probes, /metrics, the message-rate sampler and realtime_prune."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import orjson
import pytest
import websockets
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families

from realtime.ops import stats
from realtime.publish import publish_rollback_unsafe
from realtime.storage import redis as rt_redis
from realtime.storage import registry
from tests.conftest import access_token_for
from tests.live import free_port


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET a URL; returns (status, body) for error statuses too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Samples of a Prometheus exposition, keyed by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(server) -> dict[tuple[str, frozenset], float]:
    """The live server's /metrics, parsed."""
    status, body = await asyncio.to_thread(http_get, server.http_url + "/metrics")
    assert status == 200
    return parse_metrics(body.decode())


def sample(metrics: dict, name: str, **labels: str) -> float:
    """One sample's value; 0 for a labelled child not created yet."""
    return metrics.get((name, frozenset(labels.items())), 0.0)


async def open_ws(server, user):
    """A real client connected to a live server; returns (websocket, welcome)."""
    ws = await websockets.connect(server.ws_url, subprotocols=["renum.v1", "bearer." + access_token_for(user)],
                                  open_timeout=10)
    welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    return ws, welcome


# ---------------------------------------------------------------------- probes


def test_healthz_is_200_without_touching_the_database(client):
    # No db fixture: any query would fail the test.
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


def test_readyz_is_200_when_database_and_redis_answer(client, db):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok", "outbox": "ok"}}


@pytest.mark.live
def test_readyz_is_503_naming_redis_when_redis_is_unreachable(live_server_factory):
    server = live_server_factory(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")

    status, body = http_get(server.http_url + "/readyz")
    alive, _ = http_get(server.http_url + "/healthz")

    assert status == 503
    assert orjson.loads(body) == {"status": "unavailable",
                                  "checks": {"database": "ok", "redis": "failed: ConnectionError",
                                                 "outbox": "ok"}}
    assert alive == 200


@pytest.mark.live
def test_readyz_is_503_naming_the_database_when_it_is_unreachable(live_server_factory):
    server = live_server_factory(DATABASE_URL=f"postgres://nobody@127.0.0.1:{free_port()}/nothing")

    status, body = http_get(server.http_url + "/readyz")

    assert status == 503
    assert orjson.loads(body) == {"status": "unavailable",
                                  "checks": {"database": "failed: OperationalError", "redis": "ok",
                                                 "outbox": "failed: OperationalError"}}


# ---------------------------------------------------------------------- metrics


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
async def test_metrics_follow_socket_traffic(live_server_proc, user):
    before = await scrape(live_server_proc)

    ws, _ = await open_ws(live_server_proc, user)
    during = await scrape(live_server_proc)
    await ws.close()
    deadline = time.monotonic() + 5
    while True:
        after = await scrape(live_server_proc)
        if sample(after, "renum_realtime_connections") == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)

    assert sample(before, "renum_realtime_connections") == 0
    assert sample(before, "renum_realtime_connects_total", outcome="ok") == 0
    assert sample(during, "renum_realtime_connections") == 1
    assert sample(during, "renum_realtime_connects_total", outcome="ok") == 1
    assert sample(after, "renum_realtime_connections") == 0
    assert sample(after, "renum_realtime_connects_total", outcome="ok") == 1


def test_metrics_are_open_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert b"# TYPE renum_realtime_connections gauge" in response.content


def test_metrics_need_the_bearer_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "scrape-secret"

    missing = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")

    assert (missing.status_code, missing["WWW-Authenticate"]) == (401, 'Bearer realm="metrics"')
    assert wrong.status_code == 401
    assert right.status_code == 200 and b"renum_realtime_connections" in right.content


# ---------------------------------------------------------------------- message rate


def test_rate_between_two_samples():
    assert stats.rate_between(stats.Sample(100.0, 40), stats.Sample(102.0, 50)) == 5.0
    assert stats.rate_between(stats.Sample(100.0, 40), stats.Sample(100.2, 50)) is None  # too close
    assert stats.rate_between(stats.Sample(100.0, 40), stats.Sample(102.0, 3)) is None  # counter reset


def test_message_rate_counts_publishes_of_any_process():
    now = time.time()
    first = stats.message_rate(now=now)
    before = stats.published_total()
    for n in range(6):
        publish_rollback_unsafe("broadcast", "system_event", {"n": n})
    grown = stats.published_total() - before
    rate = stats.message_rate(now=now + 2.0)

    assert first is None  # one sample only
    # The counter is the Redis server's: other clients of a shared server may add to it.
    assert grown >= 6
    assert rate is not None and rate >= 3.0


# ---------------------------------------------------------------------- realtime_prune


def test_realtime_prune_removes_what_dead_processes_left_and_is_idempotent(capsys):
    client = rt_redis.sync_client()
    now = time.time()
    client.zadd(registry.procs_key(), {"dead-1": now - 5, "alive-1": now + 60})
    client.hset(registry.proc_key("dead-1"), "c-dead", b"{}")
    client.hset(registry.proc_key("alive-1"), "c-alive", b"{}")
    client.zadd(registry.user_key("7"), {"c-dead": now - 5, "c-alive": now + 60})
    client.zadd(registry.user_key("8"), {"c-other": now + 60})

    call_command("realtime_prune")
    first = capsys.readouterr().out
    call_command("realtime_prune")
    second = capsys.readouterr().out

    assert first == ("pruned registry entries of 1 dead process(es); "
                     "removed 1 expired connection id(s) from 1 user set(s)\n")
    assert second == ("pruned registry entries of 0 dead process(es); "
                      "removed 0 expired connection id(s) from 0 user set(s)\n")
    assert client.exists(registry.proc_key("dead-1")) == 0
    assert client.hkeys(registry.proc_key("alive-1")) == [b"c-alive"]
    assert client.zrange(registry.user_key("7"), 0, -1) == [b"c-alive"]
    assert client.zrange(registry.user_key("8"), 0, -1) == [b"c-other"]
    assert [p.decode() for p in client.zrange(registry.procs_key(), 0, -1)] == ["alive-1"]
