"""ASGI entry point: Django for HTTP, the channel stream over HTTP, the consumer for WebSockets."""

import os
from typing import Any

from asgiref.sync import markcoroutinefunction

from renum.handlers import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "renum.settings")
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from realtime.conf import setting  # noqa: E402
from realtime.core.auth import SessionAuthMiddleware  # noqa: E402
from realtime.ops.runtime import tune_gc  # noqa: E402
from realtime.transports.http import http_router  # noqa: E402
from realtime.transports.routing import ExactPathURLRouter, ProtocolRouter, websocket_urlpatterns  # noqa: E402
from realtime.transports.socketio.binding import SOCKETIO_PATH, make_engine  # noqa: E402

http_app = django_asgi_app
if settings.DEBUG or settings.SERVE_STATIC:
    # Development and tests serve /static/ (the demo page's scripts) from the app itself;
    # production leaves static files to the proxy or a CDN.
    http_app = ASGIStaticFilesHandler(django_asgi_app)
# Long polls and event streams are served before Django (realtime/transports/http.py): they wait
# on the hub without a thread, which a Django view under sync middleware cannot.
http_app = http_router(http_app)

protocols = ProtocolRouter(
    {
        "http": http_app,
        # The session middleware lets same-origin pages (the admin's live pages) connect with
        # their cookie; token and ticket authentication happen in the consumer.
        "websocket": SessionAuthMiddleware(ExactPathURLRouter(websocket_urlpatterns)),
    }
)

# Socket.IO clients (Engine.IO 4 / Socket.IO 5, realtime/transports/socketio/) share the process, its
# node and its sessions with /ws/; both of their transports are served here, before Django.
socketio_engine = make_engine()


@markcoroutinefunction
def application(scope: dict, receive: Any, send: Any) -> Any:
    """Route ``/socket.io/`` (HTTP and WebSocket) to the Socket.IO engine, the rest by protocol.

    A plain function returning the chosen application's coroutine, as ``ProtocolRouter``: an
    ``async def`` awaiting it would keep one more frame under every socket for its whole life.
    """
    if scope["type"] in ("http", "websocket") and scope.get("path") == SOCKETIO_PATH:
        return socketio_engine(scope, receive, send)
    return protocols(scope, receive, send)


# A server holds thousands of sockets: the garbage collector's defaults make each new one
# cost more than the last (see realtime/ops/runtime.py; REALTIME_GC_THRESHOLDS=off restores them).
tune_gc(setting("GC_THRESHOLDS"))
