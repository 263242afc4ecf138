"""Browser fixtures: Debian's Chromium driven by Playwright against real server processes.

The browser is the system's ``/usr/bin/chromium`` (``CHROMIUM_PATH`` overrides it); Playwright's
own browser downloads are never used. Without Chromium the tests are skipped on a developer's
machine and fail in CI (``CI`` set), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.live import LiveServer

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
PASSWORD = "pw-secret-123"  # tests/conftest.py make_user's default

# Short demo runs: 5 steps 0.3 s apart. The servers keep Django's async-safety check, which
# the test process turns off for itself (see ``browser``).
SERVER_ENV = {"EXECUTION_DEMO_STEPS": "5", "EXECUTION_DEMO_INTERVAL_S": "0.3", "DJANGO_ALLOW_ASYNC_UNSAFE": ""}


def _require_browser() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -r requirements.txt)")
    if not os.path.exists(CHROMIUM):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def servers(live_server_factory) -> Callable[..., LiveServer]:
    """``servers(port=None, **env)``: ``live_server_factory`` with the demo's fast execution steps."""
    return lambda port=None, **env: live_server_factory(port, **{**SERVER_ENV, **env})


@pytest.fixture
def server(servers) -> LiveServer:
    """One running server process."""
    return servers()


@pytest.fixture
def browser(monkeypatch) -> Iterator[Any]:
    """A headless Chromium, closed after the test."""
    _require_browser()
    # Playwright's sync API keeps an event loop running in this thread (switching greenlets),
    # so Django would refuse the test's own ORM calls; they are plain synchronous calls here.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    """A page in a fresh context; uncaught JavaScript errors fail the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.js_errors = errors
    yield page
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def sign_in(page: Any, server: LiveServer, user: Any, options: dict[str, Any] | None = None,
            expect_state: str = "connected") -> None:
    """Open the demo, override client options (before any script runs), and sign in through the form."""
    from playwright.sync_api import expect

    if options:
        page.add_init_script(f"window.RENUM_REALTIME_OPTIONS = {json.dumps(options)};")
    page.goto(server.http_url + "/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection-pill")).to_have_attribute("data-state", expect_state, timeout=15_000)


def off_loop(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call a service that uses ``async_to_sync`` (e.g. ``team_create``) from a thread without Playwright's loop."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(_closing_connections, function, *args, **kwargs).result()


def _closing_connections(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    from django.db import connections

    try:
        return function(*args, **kwargs)
    finally:
        connections.close_all()  # this thread's connection would otherwise outlive the test database


def record_toasts(page: Any) -> None:
    """From now on, remember the title of every toast shown (toasts disappear after a few seconds)."""
    page.evaluate("""() => {
        window.toastLog = [];
        new MutationObserver((changes) => {
            for (const change of changes) for (const node of change.addedNodes) {
                if (node.classList?.contains('toast')) window.toastLog.push(node.querySelector('strong').textContent);
            }
        }).observe(document.getElementById('toasts'), {childList: true});
    }""")


def toasts_shown(page: Any, title: str) -> int:
    """How many toasts with this title were shown since ``record_toasts``."""
    return page.evaluate("(title) => window.toastLog.filter((t) => t === title).length", title)


def badge(page: Any) -> Any:
    """The bell button, whose ``data-unread`` is the unread count shown by the badge."""
    return page.locator("#bell")
