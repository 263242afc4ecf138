"""Smoke run of the load tool: 200 clients on our server, a few broadcasts, nothing lost.

Runs the tool's machinery in-process (provisioning child, server process, client workers,
publisher process) against the test database and Redis. No timing assertions: this checks
that the tool works and that a small fan-out loses nothing, not how fast it is.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from loadtest.report import markdown, rows
from loadtest.runner import LoadConfig, run
from tests import live

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_broadcast_to_200_clients_loses_nothing_and_reports_every_row(tmp_path):
    # given: the tool pointed at the test database and Redis, our server only
    config = LoadConfig(
        scenario="broadcast", secret_key=settings.SECRET_KEY, clients=200, rate=5, duration=2,
        servers=["ours"], workers=2, connect_concurrency=100, database_url=live.test_database_url(),
        redis_url=settings.REDIS_URL, base_env=live.server_env(), migrate=False, progress=False,
        drain_timeout=10, settle_s=0.5, log_dir=tmp_path,
    )

    # when
    [result] = run(config)

    # then: every client connected, every message reached every client
    assert result.connected == 200
    assert result.published == 10
    assert result.expected == 10 * 200
    assert result.delivered == result.expected
    assert result.lost == 0
    assert result.dropped_connections == 0
    assert len(result.latencies_ms) == result.delivered
    names = [name for name, _ in rows([result])]
    assert names == [
        "clients connected", "connect time, all welcomed", "connect p99 (handshake to welcome)",
        "connect errors (retried)", "server CPU per connect", "server RSS per idle connection",
        "published (achieved rate)",
        "publisher CPU busy (1 process)", "delivered / expected", "lost", "latency p50 / p90 / p99 / max (ms)",
        "deliveries/s", "server CPU per delivery", "server CPU busy in window", "connections dropped",
        "load average before",
    ]
    table = markdown([result], "smoke")
    assert "| delivered / expected | 2000/2000 |" in table
    assert "| lost | 0 |" in table


def test_socketio_clients_get_every_broadcast(tmp_path):
    # given: the tool's Socket.IO client mode (clients on /socket.io/, token in the CONNECT auth)
    config = LoadConfig(
        scenario="broadcast", secret_key=settings.SECRET_KEY, clients=100, rate=5, duration=2,
        servers=["ours"], workers=2, connect_concurrency=100, database_url=live.test_database_url(),
        redis_url=settings.REDIS_URL, base_env=live.server_env(), migrate=False, progress=False,
        drain_timeout=10, settle_s=0.5, log_dir=tmp_path, client_protocol="socketio",
    )

    # when
    [result] = run(config)

    # then
    assert result.connected == 100
    assert result.published == 10
    assert result.delivered == result.expected == 10 * 100
    assert result.lost == 0 and result.dropped_connections == 0
