"""WebSocket routes: ``/ws/`` (token in the subprotocol, a ticket, or the session) and ``/ws/<token>/``."""

from __future__ import annotations

from typing import Any

from channels.routing import URLRouter
from django.urls import path, re_path
from django.urls.resolvers import RoutePattern

from realtime.consumers import RealtimeConsumer

websocket_urlpatterns = [
    path("ws/", RealtimeConsumer.as_asgi()),
    re_path(r"^ws/(?P<token>[A-Za-z0-9_\-.]+)/$", RealtimeConsumer.as_asgi()),
]


class ExactPathURLRouter(URLRouter):
    """Channels' URLRouter, finding its leading converter-free ``path()`` routes by dict lookup.

    Django's resolver costs more than the rest of the routing on each connect; a path such as
    ``/ws/`` needs no pattern matching. The scope the route's application gets is the one
    URLRouter would give it, and every other path goes through URLRouter itself.
    """

    def __init__(self, routes: list[Any]) -> None:
        super().__init__(routes)
        self.exact: dict[str, Any] = {}
        for route in routes:  # only the leading ones: an earlier pattern must not be skipped
            pattern = route.pattern
            if not (isinstance(pattern, RoutePattern) and not pattern.converters
                    and getattr(pattern, "_is_endpoint", False)):
                break
            self.exact.setdefault(str(pattern), route)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        """Route by exact path when one matches; otherwise as URLRouter does."""
        if "path_remaining" not in scope and not scope.get("root_path"):
            route = self.exact.get(scope.get("path", "").lstrip("/"))
            if route is not None:
                outer = scope.get("url_route", {})
                kwargs = {**outer.get("kwargs", {}), **route.default_args}
                url_route = {"args": outer.get("args", ()), "kwargs": kwargs}
                return await route.callback(dict(scope, path_remaining="", url_route=url_route), receive, send)
        return await super().__call__(scope, receive, send)
