"""The demo app and static/renum/realtime.js in a real Chromium, against real server processes.

Every test starts its own uvicorn process(es) on loopback ports and its own browser; data is
created in the test process (committed, so the server sees it) through the domain services,
which publish exactly as the admin's "send notification" form does.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from executions.services import team_create, team_membership_add, team_membership_remove, team_rename
from notifications.models import Notification
from notifications.services import notification_create
from tests.browser.conftest import badge, off_loop, record_toasts, sign_in, toasts_shown

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def notify(user, title: str, message: str = "Details of the event.", type: str = "info") -> Notification:
    """A notification sent the way services send them (published after commit)."""
    return notification_create(user=user, type=type, title=title, message=message)


def notification_items(page, title: str):
    return page.locator("#notification-list li", has=page.locator(".notification-title", has_text=title))


def toasts(page, title: str):
    return page.locator("#toasts .toast", has_text=title)


def test_static_client_is_served_as_javascript(server):
    # Given a server in development mode; when the client module is requested
    import urllib.request

    with urllib.request.urlopen(server.http_url + "/static/renum/realtime.js") as response:
        body = response.read().decode()
        content_type = response.headers["Content-Type"]
    # then it is served, as JavaScript, by the ASGI app itself
    assert content_type.startswith("text/javascript") or content_type.startswith("application/javascript")
    assert "class RealtimeClient" in body
    assert body.startswith("// Built from clients/js/realtime")


def test_login_live_notification_and_mark_read(server, page, make_user):
    # Given a signed-in user with a live socket
    user = make_user()
    sign_in(page, server, user)
    expect(page.locator("#connection-pill")).to_have_text("Connected")
    expect(badge(page)).to_have_attribute("data-unread", "0")
    expect(page.locator("#badge")).to_be_hidden()

    # When a notification is sent to them
    sent = notify(user, "Report ready", "Your weekly report was generated.", type="success")

    # Then it pops up as a toast, lands in the list and the badge counts it
    expect(toasts(page, "Report ready")).to_have_count(1)
    expect(badge(page)).to_have_attribute("data-unread", "1")
    expect(page.locator("#badge")).to_have_text("1")
    expect(badge(page)).to_have_attribute("aria-label", "Notifications, 1 unread")
    page.get_by_role("button", name="Notifications, 1 unread").click()
    item = notification_items(page, "Report ready")
    expect(item).to_have_count(1)
    expect(item).to_have_class(re.compile(r"\bunread\b"))

    # When they mark it read (over the socket command)
    item.get_by_role("button", name="Mark “Report ready” read").click()

    # Then the badge goes back to zero and the database agrees
    expect(badge(page)).to_have_attribute("data-unread", "0")
    expect(page.locator("#badge")).to_be_hidden()
    expect(item).not_to_have_class(re.compile(r"\bunread\b"))
    sent.refresh_from_db()
    assert sent.read_at is not None

    # When two more arrive and they mark all read
    notify(user, "Second")
    notify(user, "Third")
    expect(badge(page)).to_have_attribute("data-unread", "2")
    page.get_by_role("button", name="Mark all read").click()

    # Then nothing is unread anywhere
    expect(badge(page)).to_have_attribute("data-unread", "0")
    expect(page.locator("#notification-list li.unread")).to_have_count(0)
    assert Notification.objects.filter(user=user, read_at__isnull=True).count() == 0


def test_demo_execution_progress_reaches_100(server, page, make_user):
    # Given a member of a team, signed in
    user = make_user()
    off_loop(team_create, name="Research", slug="research", owner=user)
    sign_in(page, server, user)
    expect(page.locator("#team-info")).to_have_text("Team: Research")

    # When they start a demo execution, while every value the bar shows is recorded
    page.evaluate("""() => {
        window.seenProgress = [];
        new MutationObserver(() => {
            const bar = document.querySelector('#execution-list [role=progressbar]');
            if (bar) window.seenProgress.push(Number(bar.getAttribute('aria-valuenow')));
        }).observe(document.getElementById('execution-list'), {subtree: true, childList: true, attributes: true});
    }""")
    page.get_by_role("button", name="Start demo execution").click()

    # Then the bar walks up live to 100 % and the execution is completed
    bar = page.locator("#execution-list [role=progressbar]")
    expect(bar).to_have_count(1)
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=20_000)
    expect(page.locator("#execution-list .execution-status")).to_have_text("completed · 100 %")
    seen = page.evaluate("window.seenProgress")
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert {20, 40, 60, 80, 100} <= set(seen), seen


def test_team_events_show_live_in_the_team_activity(server, page, make_user):
    # Given the owner of a team, signed in
    owner, newcomer = make_user(), make_user(username="newcomer")
    team = off_loop(team_create, name="Research", slug="research-live", owner=owner)
    sign_in(page, server, owner)
    expect(page.locator("#team-info")).to_have_text("Team: Research")

    # When the team service adds a member, renames the team and the member leaves
    off_loop(team_membership_add, team=team, user=newcomer)
    off_loop(team_rename, team=team, name="Research & Development")
    off_loop(team_membership_remove, team=team, user=newcomer)

    # Then the page shows each event live, newest first, and the new name
    items = page.locator("#team-activity li")
    expect(items).to_have_text([
        "newcomer left", "Renamed from Research to Research & Development", "newcomer joined as member",
    ])
    expect(page.locator("#team-info")).to_have_text("Team: Research & Development")
    expect(page.locator("#team-activity-empty")).to_be_hidden()


def test_user_without_team_is_told_why_nothing_runs(server, page, make_user):
    # Given a user who belongs to no team; when they sign in
    sign_in(page, server, make_user())

    # Then the panel says so and the start button is disabled
    expect(page.locator("#team-info")).to_contain_text("You are not a member of any team")
    expect(page.get_by_role("button", name="Start demo execution")).to_be_disabled()


def test_server_restart_reconnects_and_delivers_missed_notification_once(servers, page, make_user):
    # Given a connected user with one notification
    server = servers()
    user = make_user()
    sign_in(page, server, user)
    record_toasts(page)
    notify(user, "Before the restart")
    expect(badge(page)).to_have_attribute("data-unread", "1")

    # When the server stops, a notification is sent meanwhile, and the server comes back on the same port
    server.stop()
    expect(page.locator("#connection-pill")).to_have_text(re.compile(r"^Reconnecting \([1-5] of 5\)$"),
                                                          timeout=10_000)
    notify(user, "While you were away")
    time.sleep(1.5)  # the client keeps retrying against the closed port
    expect(page.locator("#connection-pill")).to_have_text(re.compile(r"^Reconnecting"))
    servers(port=server.port)

    # Then the client reconnects by itself and the missed notification shows up exactly once
    expect(page.locator("#connection-pill")).to_have_text("Connected", timeout=40_000)
    expect(toasts(page, "While you were away")).to_have_count(1)
    expect(badge(page)).to_have_attribute("data-unread", "2")
    time.sleep(1.0)  # any duplicate delivery would have arrived by now
    page.locator("#bell").click()
    expect(notification_items(page, "While you were away")).to_have_count(1)
    expect(notification_items(page, "Before the restart")).to_have_count(1)
    assert toasts_shown(page, "While you were away") == 1
    assert toasts_shown(page, "Before the restart") == 1


def test_blocked_websocket_falls_back_to_polling_and_probes_back(server, page, make_user):
    # Given a network that refuses WebSockets (each attempt is closed at once), and a client
    # with a short backoff so that the fallback comes quickly
    blocked = {"on": True}
    attempts = []

    def route(ws):
        attempts.append(time.monotonic())
        if blocked["on"]:
            ws.close()
        else:
            ws.connect_to_server()

    page.route_web_socket(re.compile(r"/ws/"), route)
    user = make_user()
    sign_in(page, server, user, options={"backoffBaseMs": 200, "maxAttempts": 3, "probeIntervalMs": 2000},
            expect_state="degraded")
    record_toasts(page)

    # Then the pill says so, after the configured attempts
    expect(page.locator("#connection-pill")).to_have_text("Degraded: polling")
    assert len(attempts) >= 4  # the first connection and three reconnect attempts
    # (and once the stream follows the user's channel from a position: `listening`)
    expect(page.locator("#connection-pill")).to_have_attribute("data-listening", "true", timeout=15_000)

    # When a notification is sent, it still arrives (by long polling), with its unread count
    notify(user, "Delivered by polling")
    expect(toasts(page, "Delivered by polling")).to_have_count(1, timeout=15_000)
    expect(badge(page)).to_have_attribute("data-unread", "1", timeout=15_000)

    # And marking it read works over REST while degraded
    page.locator("#bell").click()
    notification_items(page, "Delivered by polling").get_by_role("button", name=re.compile("^Mark")).click()
    expect(badge(page)).to_have_attribute("data-unread", "0", timeout=15_000)
    assert Notification.objects.get(user=user).read_at is not None

    # When WebSockets work again, the periodic probe brings the client back, from the same positions
    blocked["on"] = False
    expect(page.locator("#connection-pill")).to_have_text("Connected", timeout=15_000)
    notify(user, "Back on the socket")
    expect(toasts(page, "Back on the socket")).to_have_count(1)
    time.sleep(1.0)  # a duplicate from the resumed socket would have arrived by now
    assert toasts_shown(page, "Delivered by polling") == 1
    assert toasts_shown(page, "Back on the socket") == 1
    expect(notification_items(page, "Back on the socket")).to_have_count(1)
    expect(notification_items(page, "Delivered by polling")).to_have_count(1)


def test_session_that_cannot_be_renewed_returns_to_login_with_reason(servers, page, make_user):
    # Given access tokens that live 6 s, a signed-in user, and a refresh token that stops working
    server = servers(JWT_ACCESS_LIFETIME_S="6")
    user = make_user()
    sign_in(page, server, user)
    page.evaluate("sessionStorage.setItem('renum.refresh', 'revoked')")

    # When the access token expires (the refresh fails, the server closes with 4011)
    # Then the app returns to the login screen and says why
    expect(page.locator("#login-view")).to_be_visible(timeout=20_000)
    expect(page.locator("#login-message")).to_have_text(
        "You were signed out: your session has expired and could not be renewed. Please sign in again.")
    expect(page.locator("#app-view")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('renum.refresh')") is None


def test_demo_screenshot(servers, page, make_user, tmp_path):
    """Render the demo with a notification and a running execution; UPDATE_DEMO_SCREENSHOT=1 writes docs/demo.png."""
    user = make_user(username="ana")
    off_loop(team_create, name="Research", slug="research", owner=user)
    slow = servers(EXECUTION_DEMO_STEPS="10", EXECUTION_DEMO_INTERVAL_S="1.5")
    sign_in(page, slow, user)
    notify(user, "Weekly report is ready", "The research team finished the weekly market report.", "success")
    notify(user, "Budget alert", "The team used 80 % of this month's model budget.", "warning")
    page.get_by_role("button", name="Start demo execution").click()
    bar = page.locator("#execution-list [role=progressbar]")
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^[3-6]0$"), timeout=20_000)
    expect(toasts(page, "Budget alert")).to_have_count(1)
    expect(badge(page)).to_have_attribute("data-unread", "2")
    page.set_viewport_size({"width": 1000, "height": 520})
    page.mouse.move(500, 450)
    expect(page.locator("#connection-pill")).to_have_text("Connected", timeout=15_000)
    target = ROOT / "docs" / "demo.png" if os.environ.get("UPDATE_DEMO_SCREENSHOT") else tmp_path / "demo.png"
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000

    # The same page on a phone, list open: nothing wider than the screen
    page.set_viewport_size({"width": 375, "height": 740})
    page.locator("#bell").click()
    expect(page.locator("#notification-panel")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    page.screenshot(path=str(tmp_path / "phone.png"))


def test_a_tab_refused_for_too_many_connections_says_why(servers, browser, make_user):
    # Given a server allowing one socket per user, and the user signed in in one tab
    server = servers(REALTIME_MAX_CONNECTIONS_PER_USER="1")
    user = make_user()
    context = browser.new_context()
    try:
        first, second = context.new_page(), context.new_page()
        sign_in(first, server, user)

        # When a second tab signs in, its socket is refused (4003)
        sign_in(second, server, user, expect_state="reconnecting")

        # Then that tab shows the server's reason, not only that it retries
        expect(second.locator("#connection-pill")).to_contain_text(": too many connections for this user")
        expect(first.locator("#connection-pill")).to_have_text("Connected")
    finally:
        context.close()


def test_a_burst_keeps_the_list_bounded_and_toasts_capped(server, page, make_user):
    # Given a signed-in user with the notification list open
    user = make_user()
    sign_in(page, server, user)
    page.locator("#bell").click()

    # When 150 notifications arrive at once
    off_loop(lambda: [notification_create(user=user, type="info", title=f"Burst {n}", message="Burst.")
                      for n in range(150)])

    # Then the badge counts them all, the list keeps the newest 100, and 3 toasts show with the rest counted
    expect(badge(page)).to_have_attribute("data-unread", "150", timeout=20_000)
    expect(page.locator("#notification-list li").first).to_contain_text("Burst 149", timeout=10_000)
    expect(page.locator("#notification-list li")).to_have_count(100)
    assert page.locator("#toasts .toast").count() <= 3
    expect(page.locator("#toasts .toast-more")).to_contain_text(re.compile(r"^\+\d+ more$"))
