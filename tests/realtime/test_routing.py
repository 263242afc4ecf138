"""The socket router: exact paths by lookup, with URLRouter's results."""

from __future__ import annotations

import pytest
from channels.routing import URLRouter
from django.urls import path, re_path

from realtime.transports.routing import ExactPathURLRouter


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


async def test_an_exact_route_gets_its_arguments_and_the_servers_scope_without_a_copy():
    seen = []

    async def application(scope, receive, send):
        seen.append(scope)

    router = ExactPathURLRouter([path("ws/", application, {"mode": "plain"}), path("bare/", application)])
    with_args, without = {"type": "websocket", "path": "/ws/"}, {"type": "websocket", "path": "/bare/"}
    await router(with_args, None, None)
    await router(without, None, None)

    assert seen[0] is with_args and seen[1] is without  # the server's scope, no copy kept per socket
    assert with_args["url_route"] == {"args": (), "kwargs": {"mode": "plain"}} and with_args["path_remaining"] == ""
    assert without["url_route"] == {"args": (), "kwargs": {}}
    with pytest.raises(TypeError):  # shared between sockets: read-only
        without["url_route"]["kwargs"]["token"] = "x"


def test_the_protocol_router_is_an_asgi3_application_for_uvicorn():
    import uvicorn

    from realtime.transports.routing import ProtocolRouter

    config = uvicorn.Config(ProtocolRouter({"websocket": None}), lifespan="off", proxy_headers=False)
    config.load()

    assert config.interface == "asgi3"


async def test_the_protocol_router_routes_by_type_and_refuses_unknown_types():
    from realtime.transports.routing import ProtocolRouter

    seen = []
    router = ProtocolRouter({"websocket": ExactPathURLRouter(recording_routes(seen))})
    await router({"type": "websocket", "path": "/ws/abc/"}, None, None)
    assert seen == [("token", "", {"args": (), "kwargs": {"token": "abc"}})]

    with pytest.raises(ValueError, match="No application configured for scope type 'lifespan'"):
        await router({"type": "lifespan"}, None, None)
