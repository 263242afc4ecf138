"""CORS of the REST API (django-cors-headers), over real HTTP against a server process."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys

import pytest

from tests.conftest import access_token_for
from tests.live import ROOT

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

APP = "http://localhost:3000"


def request(server, method: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", int(server.http_url.rsplit(":", 1)[1]), timeout=10)
    connection.request(method, path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_preflight_allows_the_client_headers_for_a_configured_origin(live_server_factory):
    server = live_server_factory(CORS_ALLOWED_ORIGINS=f"{APP},https://app.example.com")

    response = request(server, "OPTIONS", "/api/realtime/poll/", {
        "Origin": APP, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,idempotency-key,last-event-id,if-none-match",
    })

    assert response.status == 200
    assert response.getheader("Access-Control-Allow-Origin") == APP
    allowed = {h.strip() for h in response.getheader("Access-Control-Allow-Headers").split(",")}
    assert {"authorization", "content-type", "idempotency-key", "last-event-id", "if-none-match"} <= allowed
    assert "POST" in response.getheader("Access-Control-Allow-Methods")
    assert response.getheader("Access-Control-Allow-Credentials") is None


def test_answers_expose_etag_poll_interval_and_retry_after(live_server_factory, user):
    server = live_server_factory(CORS_ALLOWED_ORIGINS=APP)

    response = request(server, "GET", "/api/notifications/unread-count/", {
        "Origin": APP, "Authorization": f"Bearer {access_token_for(user)}",
    })

    assert response.status == 200
    assert response.getheader("Access-Control-Allow-Origin") == APP
    exposed = {h.strip() for h in response.getheader("Access-Control-Expose-Headers").split(",")}
    assert exposed == {"ETag", "X-Poll-Interval", "Retry-After"}


def test_other_origins_and_non_api_paths_get_no_cors_headers(live_server_factory):
    server = live_server_factory(CORS_ALLOWED_ORIGINS=APP)

    other = request(server, "OPTIONS", "/api/notifications/", {
        "Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
    admin = request(server, "OPTIONS", "/admin/login/", {"Origin": APP, "Access-Control-Request-Method": "POST"})

    assert other.getheader("Access-Control-Allow-Origin") is None
    assert admin.getheader("Access-Control-Allow-Origin") is None


def test_unset_cors_origins_follow_the_socket_origins(live_server_factory):
    server = live_server_factory(REALTIME_ALLOWED_ORIGINS="https://app.example.com")

    response = request(server, "OPTIONS", "/api/auth/token/", {
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})

    assert response.getheader("Access-Control-Allow-Origin") == "https://app.example.com"


def test_an_origin_without_a_scheme_is_refused_at_startup():
    env = {**os.environ, "CORS_ALLOWED_ORIGINS": "localhost:3000"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "corsheaders.E013" in result.stderr
    assert "localhost:3000" in result.stderr


def test_the_http_transports_answer_other_origins_like_the_rest_api(live_server_factory, user):
    """Long polls and event streams are served before Django; their answers carry CORS too."""
    server = live_server_factory(CORS_ALLOWED_ORIGINS=APP)
    port = int(server.http_url.rsplit(":", 1)[1])
    auth = {"Authorization": f"Bearer {access_token_for(user)}", "Content-Type": "application/json"}
    body = f'{{"channels": {{"user:{user.pk}": null}}, "timeout": 0}}'

    def post_poll(origin: str) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/api/realtime/poll/", body=body, headers={**auth, "Origin": origin})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response

    allowed, other = post_poll(APP), post_poll("http://evil.example")
    stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    stream.request("GET", f"/api/realtime/sse/?channel=user:{user.pk}", headers={**auth, "Origin": APP})
    sse = stream.getresponse()
    stream.close()

    assert allowed.status == 200
    assert allowed.getheader("Access-Control-Allow-Origin") == APP
    assert {h.strip() for h in allowed.getheader("Access-Control-Expose-Headers").split(",")} == \
        {"ETag", "X-Poll-Interval", "Retry-After"}
    assert other.status == 200
    assert other.getheader("Access-Control-Allow-Origin") is None
    assert sse.status == 200
    assert sse.getheader("Content-Type").startswith("text/event-stream")
    assert sse.getheader("Access-Control-Allow-Origin") == APP
