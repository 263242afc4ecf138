"""The socket router: exact paths by lookup, with URLRouter's results."""

from __future__ import annotations

import pytest
from channels.routing import URLRouter
from django.urls import path, re_path

from realtime.routing import ExactPathURLRouter


def recording_routes(seen: list):
    def app(name):
        async def application(scope, receive, send):
            seen.append((name, scope.get("path_remaining"), scope["url_route"]))
        return application

    return [
        path("ws/", app("plain")),
        re_path(r"^ws/(?P<token>[a-z]+)/$", app("token")),
        path("late/", app("late")),  # after a pattern: left to URLRouter, in order
    ]


@pytest.mark.parametrize("scope_path", ["/ws/", "ws/", "/ws/abc/", "/late/"])
async def test_routes_as_urlrouter_does(scope_path):
    ours, theirs = [], []
    router = ExactPathURLRouter(recording_routes(ours))

    await router({"type": "websocket", "path": scope_path}, None, None)
    await URLRouter(recording_routes(theirs))({"type": "websocket", "path": scope_path}, None, None)

    assert ours == theirs and len(ours) == 1


async def test_only_leading_plain_paths_are_looked_up():
    router = ExactPathURLRouter(recording_routes([]))

    assert list(router.exact) == ["ws/"]


@pytest.mark.parametrize("scope", [{"path": "/ws"}, {"path": "/nope/"}, {"path": "/app/ws/", "root_path": "/other"}])
async def test_unknown_paths_fail_as_with_urlrouter(scope):
    with pytest.raises(ValueError, match="No route found"):
        await ExactPathURLRouter(recording_routes([]))(dict(scope, type="websocket"), None, None)


async def test_root_path_is_honoured():
    seen = []

    await ExactPathURLRouter(recording_routes(seen))({"type": "websocket", "path": "/app/ws/", "root_path": "/app"},
                                                     None, None)

    assert seen == [("plain", "", {"args": (), "kwargs": {}})]
