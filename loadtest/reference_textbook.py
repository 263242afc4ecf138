"""Reference server (b): the textbook Channels consumer on channels_redis: the baseline.

What the Channels tutorial and most blog posts build: an ``AsyncJsonWebsocketConsumer`` that
authenticates the JWT (simplejwt, user loaded from the database), joins a group per user
and the ``broadcast`` group, and relays what ``group_send`` brings with ``send_json`` (one
serialization per recipient). Served by uvicorn: ``loadtest.reference_textbook:application``
with ``DJANGO_SETTINGS_MODULE=loadtest.textbook_settings``.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loadtest.textbook_settings")

import django  # noqa: E402

django.setup()

from channels.db import database_sync_to_async  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework_simplejwt.exceptions import TokenError  # noqa: E402
from rest_framework_simplejwt.tokens import AccessToken  # noqa: E402


@database_sync_to_async
def _user(user_id: str):
    return get_user_model().objects.filter(pk=user_id, is_active=True).first()


class TextbookConsumer(AsyncJsonWebsocketConsumer):
    """One socket, tutorial style."""

    async def connect(self) -> None:
        """Authenticate, join the groups, accept, greet."""
        self.joined: list[str] = []
        user = None
        for proto in self.scope.get("subprotocols", ()):
            if proto.startswith("bearer."):
                try:
                    user = await _user(AccessToken(proto[7:])["user_id"])
                except (TokenError, KeyError):
                    user = None
        if user is None:
            await self.accept("renum.v1")
            await self.close(code=4001)
            return
        self.joined = [f"user.{user.pk}", "broadcast"]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept("renum.v1")
        await self.send_json({"type": "welcome", "payload": {"user_id": str(user.pk), "heartbeat_s": 25}})

    async def disconnect(self, code: int) -> None:
        """Leave the groups."""
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:  # noqa: ANN001
        """Answer pings."""
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def lt_message(self, event: dict) -> None:
        """A message from ``group_send``: relay it."""
        await self.send_json(event["message"])


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/", TextbookConsumer.as_asgi())])})
