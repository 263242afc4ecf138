"""Our ASGI application with proposed patches applied, for A/B load runs (not production code).

``manage.py loadtest --ours-app loadtest.ours_variants:<app>`` serves one of these instead of
``renum.asgi:application`` (see docs/performance.md, "Profile" and "Proposed patches"):

- ``application``: data frames bypass channels' ``InstanceSessionWrapper.send``, which
  inspects the lazy session on every outgoing message although a socket never saves one.
- ``application_no_layer``: that, and no channel layer per consumer (no ``group_add`` on
  connect, no per-consumer ``receive`` on the layer). It estimates what moving the control
  messages onto the hub's pub/sub would save; control messages do not work in this variant.
- ``application_fast_connect``: that, and the active-user lookups of concurrent connects
  coalesced into one query (one query in flight; lookups that arrive meanwhile form the next
  batch) instead of one query plus one connection health check each, serialized on the one
  sync thread.
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "renum.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.db import database_sync_to_async  # noqa: E402
from channels.exceptions import StopConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import InstanceSessionWrapper  # noqa: E402
from channels.utils import await_many_dispatch  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from realtime import auth  # noqa: E402
from realtime.consumers import RealtimeConsumer  # noqa: E402


def innermost_send(send):  # noqa: ANN001, ANN201 - an ASGI send callable
    """The server's own ``send`` under channels' session wrappers (they only act on HTTP responses)."""
    owner = getattr(send, "__self__", None)
    while isinstance(owner, InstanceSessionWrapper):
        send = owner.real_send
        owner = getattr(send, "__self__", None)
    return send


class PatchedConsumer(RealtimeConsumer):
    """RealtimeConsumer whose outbox writes to the server's send directly."""

    async def websocket_connect(self, message: dict) -> None:
        """As before, with the outbox bound to the unwrapped send."""
        self.base_send = innermost_send(self.base_send)
        await super().websocket_connect(message)


class _NoLayer:
    """Stands in for the channel layer: membership calls do nothing."""

    async def group_add(self, group: str, channel: str) -> None:
        """No control group."""

    async def group_discard(self, group: str, channel: str) -> None:
        """No control group."""


class NoLayerConsumer(PatchedConsumer):
    """PatchedConsumer without a channel layer (no per-consumer layer receive)."""

    async def __call__(self, scope: dict, receive, send) -> None:  # noqa: ANN001 - ASGI callables
        """The consumer loop on the ASGI receive alone; the control group calls do nothing."""
        self.scope = scope
        self.channel_layer = _NoLayer()
        self.channel_name = "none"
        self.base_send = send
        try:
            await await_many_dispatch([receive], self.dispatch)
        except StopConsumer:
            pass


@database_sync_to_async
def _active_users(user_ids: list[str]) -> dict[str, object]:
    valid = [u for u in user_ids if u.isdigit()]
    return {str(u.pk): u for u in get_user_model().objects.filter(pk__in=valid, is_active=True)}


class ActiveUserLoader:
    """Coalesces concurrent active-user lookups: one query in flight, the rest wait for the next batch."""

    def __init__(self) -> None:
        self.waiting: dict[str, list[asyncio.Future]] = {}
        self.running = False

    async def load(self, user_id: str) -> object | None:
        """The active user with this id, or None."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(str(user_id), []).append(future)
        if not self.running:
            self.running = True
            asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, {}
                try:
                    users = await _active_users(list(batch))
                except Exception as exc:  # every waiter of the batch sees the failure
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for user_id, futures in batch.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(users.get(user_id))
        finally:
            self.running = False


_loader = ActiveUserLoader()


class FastConnectConsumer(NoLayerConsumer):
    """NoLayerConsumer whose connects share batched user lookups."""

    async def websocket_connect(self, message: dict) -> None:
        """As NoLayerConsumer; the lookup is swapped process-wide on first use."""
        auth._active_user = _loader.load
        await super().websocket_connect(message)


def _app(consumer: type) -> ProtocolTypeRouter:
    return ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": AuthMiddlewareStack(URLRouter([
            path("ws/", consumer.as_asgi()),
            re_path(r"^ws/(?P<token>[A-Za-z0-9_\-.]+)/$", consumer.as_asgi()),
        ])),
    })


application = _app(PatchedConsumer)
application_no_layer = _app(NoLayerConsumer)
application_fast_connect = _app(FastConnectConsumer)
