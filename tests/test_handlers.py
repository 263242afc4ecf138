"""The project's ASGI handler: Django's middleware chain and view in one hop to the sync thread."""

from __future__ import annotations

import asyncio

import pytest
from asgiref import sync
from channels.testing import HttpCommunicator

from notifications.services import notification_create
from renum.handlers import OneHopASGIHandler
from tests.conftest import access_token_for

pytestmark = pytest.mark.django_db(transaction=True)


class HopCounter:
    """Counts the calls that cross from the event loop to a sync thread (``sync_to_async``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real_call = sync.SyncToAsync.__call__

        async def counted(wrapper, *args, **kwargs):
            self.count += 1
            return await real_call(wrapper, *args, **kwargs)

        monkeypatch.setattr(sync.SyncToAsync, "__call__", counted)


async def _get(app, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    communicator = HttpCommunicator(app, "GET", path, headers=headers)
    return await communicator.get_response(timeout=10)


def test_the_chain_is_built_in_sync_mode():
    handler = OneHopASGIHandler()
    assert not asyncio.iscoroutinefunction(handler._middleware_chain)


async def _unread_count(app, user) -> dict:
    return await _get(app, "/api/notifications/unread-count/", [
        (b"authorization", f"Bearer {access_token_for(user)}".encode()), (b"host", b"testserver")])


def test_a_rest_call_crosses_to_the_sync_thread_at_most_three_times(user, monkeypatch):
    """request_started, the chain with the view, and the response's close: three hops, where
    Django's handler makes one per middleware method (a dozen and more with this project's)."""
    notification_create(user=user, type="info", title="one", message="")
    notification_create(user=user, type="info", title="two", message="")
    hops = HopCounter(monkeypatch)

    response = asyncio.run(_unread_count(OneHopASGIHandler(), user))

    assert response["status"] == 200
    assert response["body"] == b'{"count":2}'
    headers = {name.lower(): value for name, value in response["headers"]}
    assert headers[b"x-frame-options"] == b"DENY"  # the middleware ran (XFrameOptionsMiddleware)
    assert b"etag" in headers
    assert 1 <= hops.count <= 3


def test_django_s_own_handler_would_cross_many_more_times(user, monkeypatch):
    """The comparison the handler exists for, measured the same way."""
    from django.core.handlers.asgi import ASGIHandler

    hops = HopCounter(monkeypatch)
    response = asyncio.run(_unread_count(ASGIHandler(), user))

    assert response["status"] == 200
    assert hops.count > 6


def test_errors_and_middleware_answers_are_unchanged(user):
    handler = OneHopASGIHandler()
    missing = asyncio.run(_get(handler, "/api/notifications/unread-count/", [(b"host", b"testserver")]))
    assert missing["status"] == 401
    unknown = asyncio.run(_get(handler, "/api/no-such-endpoint/", [(b"host", b"testserver")]))
    assert unknown["status"] == 404
