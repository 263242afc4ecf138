"""Django's ASGI handler, with the middleware chain and the view run in one hop to the sync thread.

Under ASGI, Django runs its middleware in async mode: each ``MiddlewareMixin`` middleware
calls its ``process_request`` and ``process_response`` through ``sync_to_async``, and a
sync-only middleware or view is adapted once more. A REST call through this project's
middleware and a DRF view so makes a dozen trips between the event loop and Django's one
sync thread, and each trip back waits behind everything else the loop has to do: with
thousands of long pollers and streams on the same loop, a 2 ms ``unread-count`` answered in
hundreds of milliseconds. Here the chain is loaded in sync mode and called in one
``sync_to_async`` hop: the same middleware, the same views, the same thread (so the same
database connection rules), and one trip instead of a dozen. The request_started and
request_finished signals keep Django's own handling (a hop each).
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase


class OneHopASGIHandler(ASGIHandler):
    """``ASGIHandler`` whose middleware chain is sync and is called in one hop per request."""

    def load_middleware(self, is_async: bool = False) -> None:
        """Build the chain in sync mode whatever the caller asks (``ASGIHandler`` asks async)."""
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        """The sync ``get_response`` (middleware and view) in Django's sync thread, in one hop."""
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


def get_asgi_application() -> OneHopASGIHandler:
    """``django.core.asgi.get_asgi_application`` with the one-hop handler."""
    import django

    django.setup(set_prefix=False)
    return OneHopASGIHandler()
