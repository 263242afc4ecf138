"""socket.io-client 4.8 (its browser build, from the npm workspace) in Chromium against a live server.

The page starts on HTTP long polling, upgrades to WebSocket, and receives a notification the
service created; a refused token is a ``connect_error`` with ``data.code`` 4001.
"""

from __future__ import annotations

import pytest

from notifications.services import notification_create
from tests.conftest import access_token_for
from tests.live import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

BUILD = ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"

CLIENT = """(token) => {
  window.seen = { opened: [], connects: 0, errors: [], transports: [], titles: [] };
  const socket = io({ auth: { token } });
  socket.on('connect', () => { window.seen.connects += 1; });
  socket.on('connect_error', (err) => window.seen.errors.push(err.data ? err.data.code : err.message));
  socket.io.on('open', () => {
    window.seen.opened.push(socket.io.engine.transport.name);
    socket.io.engine.on('upgrade', (t) => window.seen.transports.push(t.name));
  });
  socket.on('notification', (envelope) => window.seen.titles.push(envelope.payload.title));
  window.socket = socket;
}"""


@pytest.fixture
def socketio_page(page, server):
    if not BUILD.exists():
        pytest.skip("the npm workspace is not installed (scripts/bootstrap_node.sh)")
    page.goto(server.http_url + "/")
    page.add_script_tag(path=str(BUILD))
    return page


def test_polling_upgrades_to_websocket_and_a_notification_arrives(socketio_page, make_user):
    user = make_user()

    socketio_page.evaluate(CLIENT, access_token_for(user))

    socketio_page.wait_for_function("window.seen.connects === 1 && window.seen.transports.includes('websocket')",
                                    timeout=15_000)
    assert socketio_page.evaluate("window.seen.opened") == ["polling"]
    assert socketio_page.evaluate("window.socket.io.engine.transport.name") == "websocket"
    notification_create(user=user, type="info", title="In Chromium", message="m")
    socketio_page.wait_for_function("window.seen.titles.length === 1", timeout=10_000)
    assert socketio_page.evaluate("window.seen.titles") == ["In Chromium"]


def test_a_refused_token_is_a_connect_error_with_code_4001(socketio_page):
    socketio_page.evaluate(CLIENT, "not-a-token")

    socketio_page.wait_for_function("window.seen.errors.length === 1", timeout=15_000)
    assert socketio_page.evaluate("window.seen.errors") == [4001]
    assert socketio_page.evaluate("window.socket.active") is False  # it does not retry by itself
