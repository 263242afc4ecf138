"""Socket.IO polling sessions through nginx in front of two server processes (docs/operations.md).

The upstream block of "Socket.IO behind several processes", as written, on loopback ports:
clients from several loopback addresses each keep one process for the whole polling session,
and the addresses are spread over both processes. With a plain round robin instead, the
request after the handshake reaches the other process and the session is unknown there.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import access_token_for
from tests.live import ROOT, LiveServer, free_port

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")]


def documented_blocks() -> tuple[str, str]:
    """The upstream block and the location block of the section, as operators copy them."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"### Socket\.IO behind several processes\n.*?```nginx\n(.*?)```", text, re.S).group(1)
    upstream = re.search(r"upstream renum_socketio \{.*?\n\}\n", block, re.S).group(0)
    location = re.search(r"    location /socket\.io/ \{.*?\n    \}\n", block, re.S).group(0)
    return upstream, location


def nginx_config(tmp: Path, port: int, servers: list[LiveServer], *, sticky: bool) -> str:
    upstream, location = documented_blocks()
    upstream, count = re.subn(r"(    server 127\.0\.0\.1:\d+ max_fails=0;\n)+",
                              "".join(f"    server 127.0.0.1:{s.port} max_fails=0;\n" for s in servers), upstream)
    assert count == 1
    if not sticky:
        upstream = upstream.replace("    hash $remote_addr consistent;", "    # round robin;")
    return f"""
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{upstream}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
{location}
    }}
}}
"""


@pytest.fixture
def proxied(live_server_factory, tmp_path) -> Iterator:
    """``proxied(sticky=...)``: the port of nginx in front of two fresh server processes."""
    started = []

    def start(*, sticky: bool) -> int:
        servers = [live_server_factory(), live_server_factory()]
        port = free_port()
        tmp = tmp_path / f"nginx-{len(started)}"
        tmp.mkdir()
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_config(tmp, port, servers, sticky=sticky))
        check = subprocess.run([NGINX, "-t", "-p", str(tmp), "-c", str(conf)], capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, check.stderr
        process = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        started.append(process)
        deadline = time.monotonic() + 15
        while True:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=0.5).connect()
                return port
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.1)

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


def polling_session(port: int, source: str, token: str) -> tuple[str, list[int]]:
    """Handshake, CONNECT, a command with an ack, over polling from ``source``; returns the
    process prefix of the connection id and every request's status."""
    statuses = []

    def call(method: str, query: str, body: bytes | None = None) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
        conn.request(method, f"/socket.io/?EIO=4&transport=polling{query}", body=body)
        response = conn.getresponse()
        statuses.append(response.status)
        data = response.read()
        conn.close()
        return data

    sid = orjson.loads(call("GET", "")[1:])["sid"]
    call("POST", f"&sid={sid}", b"40" + orjson.dumps({"token": token}))
    packets = []
    while len(packets) < 2 and statuses[-1] == 200:
        packets += [p for p in call("GET", f"&sid={sid}").decode().split("\x1e") if p.startswith("4")]
    if statuses[-1] != 200:
        return "", statuses
    welcome = orjson.loads(packets[1][2:])
    call("POST", f"&sid={sid}", b'421["command",{"name":"notification.mark_all_read","args":{}}]')
    ack = call("GET", f"&sid={sid}").decode()
    assert ack.startswith("431[") and "result" in ack
    return welcome[1]["connection_id"][:16], statuses


def test_sticky_upstream_keeps_each_polling_session_on_one_process(proxied, user):
    port = proxied(sticky=True)
    token = access_token_for(user)

    # 16 client addresses, so that the consistent hash (its ring drawn from the random ports)
    # puts sessions on both processes: with 8, all of them went to one process in 1 run of 10.
    results = [polling_session(port, f"127.0.0.{n}", token) for n in range(1, 17)]

    assert all(set(statuses) == {200} for _, statuses in results)
    assert len({process for process, _ in results}) == 2  # both processes served sessions


def test_round_robin_breaks_polling_sessions(proxied, user):
    port = proxied(sticky=False)

    process, statuses = polling_session(port, "127.0.0.1", access_token_for(user))

    assert process == "" and statuses[0] == 200 and 400 in statuses
