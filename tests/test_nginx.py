"""The nginx configuration of docs/operations.md, run as written by Debian's nginx in front of a
server on the production settings (only the ports, the upstream address and a throwaway
certificate are changed): REST, the admin login over HTTPS (CSRF), long polling and sockets
work through it; /metrics is refused; plain HTTP redirects; a client's own X-Forwarded-For
changes neither its registered address nor its login throttle.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from realtime.storage import registry
from tests.conftest import access_token_for
from tests.live import ROOT, LiveServer, free_port

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
OPENSSL = shutil.which("openssl")
HOST = "app.example.com"
ORIGIN = f"https://{HOST}"

pytestmark = [
    pytest.mark.live, pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(NGINX is None, reason="Debian's nginx is not installed (apt-get install nginx-light)"),
    pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed (apt-get install openssl)"),
]


@pytest.fixture(autouse=True)
def _close_thread_connections(close_thread_connections):
    """Async tests here touch the database from asgiref's thread (PostgreSQL: closed after each)."""


def documented_config() -> str:
    """The nginx block of docs/operations.md, exactly as operators copy it."""
    text = (ROOT / "docs" / "operations.md").read_text()
    return re.search(r"## Reverse proxy \(nginx\)\n\n```nginx\n(.*?)```", text, re.S).group(1)


def localized(config: str, *, upstream: int, https_port: int, http_port: int, cert: Path, key: Path) -> str:
    """The documented config on loopback ports, with one upstream and a test certificate."""
    config, upstreams = re.subn(r"(    server 127\.0\.0\.1:\d+ max_fails=0;\n)+",
                                f"    server 127.0.0.1:{upstream} max_fails=0;\n", config)
    replacements = {
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "# ssl_certificate ...; ssl_certificate_key ...;": f"ssl_certificate {cert}; ssl_certificate_key {key};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
    }
    assert upstreams == 1
    for old, new in replacements.items():
        assert config.count(old) == 1, old
        config = config.replace(old, new)
    return config


@pytest.fixture(scope="module")
def proxy(django_db_setup, tmp_path_factory) -> Iterator[dict]:
    """nginx on loopback in front of one server process on renum.settings_production."""
    tmp = tmp_path_factory.mktemp("nginx")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    server = LiveServer(
        uvicorn_args=("--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"),  # as scripts/serve.sh
        DJANGO_SETTINGS_MODULE="renum.settings_production", ALLOWED_HOSTS=HOST, REALTIME_ALLOWED_ORIGINS=ORIGIN,
    ).start()
    https_port, http_port = free_port(), free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
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
{localized(documented_config(), upstream=server.port, https_port=https_port, http_port=http_port,
           cert=cert, key=key)}
}}
""")
    check = subprocess.run([NGINX, "-t", "-p", str(tmp), "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    nginx = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(conf)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket_to(https_port):
                    break
            except OSError:
                assert nginx.poll() is None, nginx.stderr.read()
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.1)
        yield {"https": https_port, "http": http_port, "server": server}
    finally:
        nginx.terminate()
        nginx.wait(10)
        server.stop()


def socket_to(port: int):
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=0.5)


_tls = ssl.create_default_context()
_tls.check_hostname = False
_tls.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate


def request(proxy: dict, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes | None = None,
            tls: bool = True) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request through nginx, with the site's Host."""
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", proxy["https"], context=_tls, timeout=15)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", proxy["http"], timeout=15)
    conn.request(method, path, body=body, headers={"Host": HOST, **(headers or {})})
    response = conn.getresponse()
    try:
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def cookies(headers: http.client.HTTPMessage) -> dict[str, str]:
    return {c.split("=", 1)[0]: c.split("=", 1)[1].split(";", 1)[0] for c in headers.get_all("Set-Cookie") or ()}


def admin_login(proxy: dict, username: str, password: str, forwarded_for: str | None = None) -> tuple[int, str, bytes]:
    """The admin's login form as a browser posts it over HTTPS (CSRF cookie, token and Origin)."""
    status, headers, page = request(proxy, "GET", "/admin/login/")
    assert status == 200, page[:500]
    csrf_cookie = cookies(headers)["csrftoken"]
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": username, "password": password,
                                   "next": "/admin/"}).encode()
    extra = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    status, headers, page = request(proxy, "POST", "/admin/login/?next=/admin/", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={csrf_cookie}",
        "Origin": ORIGIN, "Referer": f"{ORIGIN}/admin/login/", **extra})
    return status, headers.get("Location", ""), page


def make_user(**fields):
    return get_user_model().objects.create_user(username=f"n-{uuid.uuid4().hex[:10]}", password="pw-secret-123",
                                                **fields)


def test_rest_health_and_the_app_are_served_through_the_proxy(proxy):
    user = make_user()

    health = request(proxy, "GET", "/healthz")
    anonymous = request(proxy, "GET", "/api/teams/")
    teams = request(proxy, "GET", "/api/teams/", headers={"Authorization": f"Bearer {access_token_for(user)}"})
    events = request(proxy, "GET", f"/api/realtime/events/?channel=user:{user.pk}&timeout=0",
                     headers={"Authorization": f"Bearer {access_token_for(user)}"})

    assert (health[0], orjson.loads(health[2])) == (200, {"status": "ok"})
    assert anonymous[0] == 401  # the app answered (a lost Host would be a 400 DisallowedHost)
    assert (teams[0], orjson.loads(teams[2])) == (200, [])
    assert events[0] == 200 and orjson.loads(events[2])["messages"] == []
    assert teams[1]["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_metrics_are_refused_and_plain_http_redirects(proxy):
    metrics = request(proxy, "GET", "/metrics")
    plain = request(proxy, "GET", "/api/teams/?x=1", tls=False)

    assert metrics[0] == 403  # nginx's allow/deny: not from 10.0.0.0/8
    assert (plain[0], plain[1]["Location"]) == (301, f"https://{HOST}/api/teams/?x=1")


def test_the_admin_login_works_over_https_through_the_proxy(proxy):
    staff = make_user(is_staff=True)

    status, location, _ = admin_login(proxy, staff.username, "pw-secret-123")

    # A 302 to the admin: CSRF's origin check passed, so the app knew the request was HTTPS.
    assert (status, location) == (302, "/admin/")


def test_a_forged_x_forwarded_for_changes_neither_the_throttle_nor_the_address(proxy):
    staff = make_user(is_staff=True)
    for n in range(20):  # one address, twenty accounts, each attempt claiming another address
        status, _, _ = admin_login(proxy, f"nobody-{n}", "guess", forwarded_for=f"10.{n}.0.1")
        assert status == 200

    status, _, page = admin_login(proxy, staff.username, "pw-secret-123", forwarded_for="10.99.0.1")

    assert status == 200 and b"Too many failed login attempts" in page


async def test_sockets_work_through_the_proxy_with_the_real_client_address(proxy):
    user = await sync_to_async(make_user)()
    ws = await websockets.connect(
        f"wss://{HOST}:{proxy['https']}/ws/", host="127.0.0.1", port=proxy["https"], ssl=_tls, proxy=None,
        origin=ORIGIN, subprotocols=["renum.v1", f"bearer.{access_token_for(user)}"],
        additional_headers={"X-Forwarded-For": "6.6.6.6"}, open_timeout=10)
    try:
        welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send('{"type":"ping","id":1}')
        pong = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        entries = [e for e in await sync_to_async(registry.live_connections)()
                   if e["connection_id"] == welcome["payload"]["connection_id"]]
    finally:
        await ws.close()

    assert welcome["type"] == "welcome" and pong == {"type": "pong", "reply_to": 1}
    assert [e["ip"] for e in entries] == ["127.0.0.1"]  # nginx's address for the client, not the forged one
