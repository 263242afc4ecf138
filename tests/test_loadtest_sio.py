"""The load tool over Socket.IO: the ``sio`` client mode and the servers ours-sio, node-sio, pysio.

The smoke runs are small (no timing assertions): each checks that the tool's Socket.IO
clients connect with their JWT in the CONNECT auth, count every broadcast by its marks, and
lose nothing, on our server and on the two reference servers when their dependencies are
here (Node.js 20 and npm for node-sio, python-socketio for pysio).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import orjson
import pytest
from django.conf import settings

from loadtest.clients import sio_stamp_of
from loadtest.report import Result, ratio_rows
from loadtest.runner import LoadConfig, run
from loadtest.servers import NODE_DIR, ServerProcess, ServerSpec, ensure_node_reference, server_env
from tests import live

RUN = "ltsio0001"


def _event(name: str, envelope: dict, prefix: str = "42") -> str:
    return prefix + orjson.dumps([name, envelope, "offset-cursor"]).decode()


def test_an_event_of_the_run_is_counted_by_its_mark_whatever_its_name():
    envelope = {"type": "system_event", "payload": {"t": 123.5, "seq": 0, "run": RUN}}

    assert sio_stamp_of(_event("system_event", envelope), RUN) == 123.5
    assert sio_stamp_of(_event("anything", envelope).encode(), RUN) == 123.5
    # an ack id or a namespace before the arguments
    assert sio_stamp_of(_event("system_event", envelope, "4217"), RUN) == 123.5
    assert sio_stamp_of(_event("system_event", envelope, "42/admin,"), RUN) == 123.5


def test_a_notification_is_counted_by_the_marks_of_its_action():
    envelope = {"type": "notification", "payload": {"action": {"payload": {"t": 7.0, "seq": 1, "run": RUN}}}}

    assert sio_stamp_of(_event("notification", envelope), RUN) == 7.0


@pytest.mark.parametrize("frame", [
    _event("system_event", {"payload": {"t": 1.0, "run": "another-run"}}),  # someone else's run
    "2",  # a ping
    '40{"sid":"x","pid":"y"}',  # the CONNECT answer
    _event("welcome", {"payload": {"user_id": 1}}),
    '43["ltsio0001"]',  # an ack, not an event
])
def test_other_frames_are_not_counted(frame):
    assert sio_stamp_of(frame, RUN) is None


def test_the_socketio_servers_are_reached_on_engineio_websocket_transport():
    for name in ("ours-sio", "node-sio", "pysio"):
        spec = ServerSpec.parse(name)
        env = server_env(spec, {}, database_url="postgres://x", redis_url="redis://x", secret_key="s",
                         layer_prefix="p")
        process = ServerProcess(spec, env, Path("/nonexistent"))

        assert process.url.endswith("/socket.io/?EIO=4&transport=websocket")
        command = " ".join(process.command())
        if name == "node-sio":
            assert "reference_node/server.js" in command and "--key p:sio" in command
        elif name == "pysio":
            assert "loadtest.reference_pysio:application" in command
            assert env["PYSIO_CHANNEL"] == "p:sio"
        else:
            assert "renum.asgi:application" in command


def test_ours_over_socketio_is_compared_with_the_node_server():
    mine = Result(server="ours-sio", kind="ours-sio", scenario="broadcast", clients=10, connected=10,
                  connect_s=2.0, rss_before=0, rss_idle=300_000, rate_target=1, delivered=100, cpu_s=0.002,
                  latencies_ms=[1.0])
    node = Result(server="node-sio", kind="node-sio", scenario="broadcast", clients=10, connected=10,
                  connect_s=1.0, rss_before=0, rss_idle=200_000, rate_target=1, delivered=100, cpu_s=0.001,
                  latencies_ms=[1.0])

    [(name, cells)] = ratio_rows([mine, node])

    assert name == "ours-sio / node-sio"
    # connect time, CPU per connect, RSS per connection, CPU per delivery, p99
    assert cells[0] == "2.00x" and cells[2] == "1.50x" and cells[3] == "2.00x"


def _node_ready() -> str | None:
    """Why node-sio cannot run here, or None."""
    if shutil.which("node") is None:
        return "node-sio needs Node.js on PATH"
    try:
        ensure_node_reference()
    except Exception as exc:  # no npm, or its packages could not be installed (no registry)
        return f"node-sio's packages could not be installed in {NODE_DIR.name}: {exc}"
    return None


def _skip_reason(server: str) -> str | None:
    if server == "node-sio":
        return _node_ready()
    if server == "pysio" and importlib.util.find_spec("socketio") is None:
        return "pysio needs python-socketio (pip install python-socketio==5.18.1)"
    return None


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server", ["ours-sio", "node-sio", "pysio"])
def test_a_small_broadcast_over_socketio_loses_nothing(server, tmp_path):
    reason = _skip_reason(server)
    if reason:
        pytest.skip(reason)
    # given: the tool pointed at the test database and Redis, one Socket.IO server
    config = LoadConfig(
        scenario="broadcast", secret_key=settings.SECRET_KEY, clients=60, rate=5, duration=2,
        servers=[server], workers=2, connect_concurrency=60, database_url=live.test_database_url(),
        redis_url=settings.REDIS_URL, base_env=live.server_env(), migrate=False, progress=False,
        drain_timeout=10, settle_s=0.5, log_dir=tmp_path,
    )

    # when
    [result] = run(config)

    # then: every client connected over Socket.IO, every message reached every client once
    assert result.kind == server
    assert result.connected == 60
    assert result.connect_errors == 0
    assert result.published == 10
    assert result.expected == 10 * 60
    assert result.delivered == result.expected
    assert result.lost == 0
    assert result.dropped_connections == 0
    assert len(result.latencies_ms) == result.delivered
