"""The client's degraded mode over server-sent events, in Chromium, against a live server.

The page loads static/renum/realtime.js from the server and signs in with a real JWT; the
WebSocket is refused by the browser's network layer, so the client falls back over plain HTTP
and must pick the one server-sent events stream (the browser has EventSource).
"""

from __future__ import annotations

import json
import re
import time

import pytest

from notifications.services import notification_create
from tests.browser.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

CLIENT = """async ({ username, password }) => {
  const module = await import('/static/renum/realtime.js');
  // A new access token whenever the client asks (tokens may be short-lived in these tests).
  const getToken = async () => {
    const answer = await fetch('/api/auth/token/', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password }) });
    return (await answer.json()).access;
  };
  window.seen = { states: [], titles: [], transports: [] };
  const client = new module.RealtimeClient({ url: '/ws/', getToken, backoffBaseMs: 100,
    maxAttempts: 2, probeIntervalMs: 600000 });
  client.onStateChange((state, info) => {
    window.seen.states.push(state);
    if (info.transport) window.seen.transports.push(info.transport);
  });
  client.onMessage('notification', (message) => window.seen.titles.push(message.payload.title));
  window.client = client;
  client.connect();
}"""


def test_blocked_websocket_degrades_onto_one_sse_stream_and_delivers_once(server, page, make_user):
    # Given a network that refuses WebSockets, and a record of the page's HTTP requests
    sockets = []
    page.route_web_socket(re.compile(r"/ws/"), lambda ws: (sockets.append(ws), ws.close()))
    requests = []
    page.on("request", lambda request: requests.append(request))
    user = make_user()
    page.goto(server.http_url + "/")  # the demo page: its own client starts only at sign-in

    # When the client starts
    page.evaluate(CLIENT, {"username": user.username, "password": PASSWORD})

    # Then it gives the socket up and follows every channel on ONE server-sent events stream
    page.wait_for_function("window.client.state === 'degraded' && window.client.stateInfo.transport === 'sse'",
                           timeout=15_000)
    def streams() -> list:
        return [r for r in requests if "/api/realtime/sse/" in r.url]

    deadline = time.monotonic() + 10
    while not streams() and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(sockets) == 3  # the first connection and two reconnect attempts
    assert len(streams()) == 1
    query = streams()[0].url.split("?", 1)[1]
    assert sorted(p.split("=", 1)[1] for p in query.split("&") if p.startswith("channel=")) == [
        "broadcast", f"user%3A{user.pk}"]
    assert re.search(r"(^|&)ticket=[^&]+", query)

    # When the service creates a notification
    # (the stream's `ready` gave the client its positions: what is published from now on is owed to it)
    page.wait_for_function("(channel) => channel in window.client.positions()", arg=f"user:{user.pk}", timeout=15_000)
    notification_create(user=user, type="info", title="Delivered over SSE", message="Details.")

    # Then it arrives exactly once, over the stream: no long poll waited for it
    page.wait_for_function("window.seen.titles.includes('Delivered over SSE')", timeout=15_000)
    page.wait_for_timeout(1500)  # a duplicate would have arrived by now
    assert page.evaluate("window.seen.titles") == ["Delivered over SSE"]
    polls = [r for r in requests if r.url.endswith("/api/realtime/poll/")]
    assert [json.loads(r.post_data)["timeout"] for r in polls] == [0] * len(polls)  # catch-ups only
    assert page.evaluate("window.client.stateInfo.transport") == "sse"
    assert len(streams()) == 1
    page.evaluate("window.client.disconnect()")


def test_a_stream_ended_by_expiring_credentials_resumes_from_its_cursor_with_a_new_ticket(servers, page, make_user):
    # Given access tokens (and so ticket streams) that last 6 s, and a network that refuses WebSockets
    server = servers(JWT_ACCESS_LIFETIME_S="6")
    page.route_web_socket(re.compile(r"/ws/"), lambda ws: ws.close())
    streams = []
    page.on("request", lambda request: streams.append(request.url) if "/api/realtime/sse/" in request.url else None)
    user = make_user()
    page.goto(server.http_url + "/")
    page.evaluate(CLIENT, {"username": user.username, "password": PASSWORD})
    page.wait_for_function("window.client.stateInfo.transport === 'sse'", timeout=15_000)
    page.wait_for_function("(channel) => channel in window.client.positions()", arg=f"user:{user.pk}", timeout=15_000)

    # When a notification comes on the first stream, and another after that stream ended
    notification_create(user=user, type="info", title="First stream", message="Details.")
    page.wait_for_function("window.seen.titles.includes('First stream')", timeout=15_000)
    deadline = time.monotonic() + 20
    while len(streams) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert len(streams) >= 2, "the server should have ended the first stream when its credentials expired"
    notification_create(user=user, type="info", title="Next stream", message="Details.")
    page.wait_for_function("window.seen.titles.includes('Next stream')", timeout=15_000)
    page.wait_for_timeout(1500)

    # Then the new stream was opened with a new ticket and the last cursor, and each arrived once
    first, second = (dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&")) for url in streams[:2])
    assert "since" not in first
    assert second["since"] and second["ticket"] != first["ticket"]
    assert page.evaluate("window.seen.titles") == ["First stream", "Next stream"]
    assert page.evaluate("window.client.state") == "degraded"
    page.evaluate("window.client.disconnect()")
