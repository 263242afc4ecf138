"""WebSocket routes: ``/ws/`` (token in the subprotocol, a ticket, or the session) and ``/ws/<token>/``."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from asgiref.sync import markcoroutinefunction
from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path, re_path
from django.urls.resolvers import RoutePattern

from realtime.transports.consumers import RealtimeConsumer

websocket_urlpatterns = [
    path("ws/", RealtimeConsumer.as_asgi()),
    re_path(r"^ws/(?P<token>[A-Za-z0-9_\-.]+)/$", RealtimeConsumer.as_asgi()),
]


class ExactPathURLRouter(URLRouter):
    """Channels' URLRouter, finding its leading converter-free ``path()`` routes by dict lookup.

    Django's resolver costs more than the rest of the routing on each connect; a path such as
    ``/ws/`` needs no pattern matching. The scope the route's application gets holds what
    URLRouter would give it, and every other path goes through URLRouter itself.

    The scope of an exact route is not copied (URLRouter copies it, ``dict(scope, ...)``,
    which every socket would keep for its whole life): ``path_remaining`` and ``url_route``
    are set in the server's own scope, which this router, outermost, is the only one to route
    on; a route without arguments shares one read-only ``url_route``. ``__call__`` is a plain
    function returning the route's coroutine, so no frame of the router stays suspended
    under each socket either.
    """

    _asgi_single_callable = True  # a hint for asgiref: called once with (scope, receive, send)

    def __init__(self, routes: list[Any]) -> None:
        super().__init__(routes)
        self.exact: dict[str, Any] = {}
        for route in routes:  # only the leading ones: an earlier pattern must not be skipped
            pattern = route.pattern
            if not (isinstance(pattern, RoutePattern) and not pattern.converters
                    and getattr(pattern, "_is_endpoint", False)):
                break
            self.exact.setdefault(str(pattern), route)

    def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        """Route by exact path when one matches; otherwise as URLRouter does (an awaitable either way)."""
        if "path_remaining" not in scope and not scope.get("root_path"):
            route = self.exact.get(scope.get("path", "").lstrip("/"))
            if route is not None:
                outer = scope.get("url_route")
                if outer is None and not route.default_args:
                    url_route = _NO_ARGUMENTS
                else:
                    outer = outer or {}
                    kwargs = {**outer.get("kwargs", {}), **route.default_args}
                    url_route = {"args": outer.get("args", ()), "kwargs": kwargs}
                scope["path_remaining"] = ""
                scope["url_route"] = url_route
                return route.callback(scope, receive, send)
        return super().__call__(scope, receive, send)


# The ``url_route`` of every socket on a route without arguments.
_NO_ARGUMENTS = MappingProxyType({"args": (), "kwargs": MappingProxyType({})})


class ProtocolRouter(ProtocolTypeRouter):
    """Channels' ProtocolTypeRouter, as a plain function returning the application's coroutine
    (Channels' own awaits it: a frame more kept under every socket for its whole life).

    ``__call__`` is marked as a coroutine function so that servers which look (uvicorn picks
    ASGI 3 that way) still see an ASGI 3 application.
    """

    _asgi_single_callable = True  # the same, for asgiref's ``guarantee_single_callable`` (daphne)

    @markcoroutinefunction
    def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        """The awaitable of the application for the scope's type."""
        application = self.application_mapping.get(scope["type"])
        if application is None:
            raise ValueError(f"No application configured for scope type {scope['type']!r}")
        return application(scope, receive, send)
