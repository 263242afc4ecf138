"""The realtime monitor in Chromium: it refreshes itself and its disconnect button closes the socket."""

from __future__ import annotations

import shutil

import pytest
from asgiref.sync import sync_to_async

from tests.realtime.test_admin import MONITOR, close_code, open_ws

playwright_api = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]


async def test_the_monitor_shows_new_sockets_by_itself_and_disconnects_them(live_server_proc, make_user):
    staff = await sync_to_async(make_user)(is_staff=True, is_superuser=True)
    user = await sync_to_async(make_user)()
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = await browser.new_page()
        await page.goto(f"{live_server_proc.http_url}/admin/login/?next={MONITOR}")
        await page.fill("#id_username", staff.username)
        await page.fill("#id_password", "pw-secret-123")
        await page.click("input[type=submit]")
        await page.wait_for_selector("#rt-connection-table")
        assert await page.inner_text("#rt-connections-total b") == "0"

        # Opened after the page loaded: only the page's polling can show it.
        ws, welcome = await open_ws(live_server_proc, user, user_agent_header="browser-test/2.0")
        row = f'tr[data-connection-id="{welcome["payload"]["connection_id"]}"]'
        await page.wait_for_selector(row, timeout=10_000)
        assert "browser-test/2.0" in await page.inner_text(row)
        assert await page.inner_text("#rt-connections-total b") == "1"
        assert (await page.inner_text("#rt-updated")).startswith("updated ")

        await page.select_option("#rt-close-code", "1012")
        await page.click(f"{row} input.rt-disconnect")
        assert await close_code(ws) == (1012, "disconnected by an administrator")
        await page.wait_for_selector(".messagelist .success")
        assert "asked to close with 1012" in await page.inner_text(".messagelist")
        await browser.close()

