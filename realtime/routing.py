"""WebSocket routes: ``/ws/`` (token in the subprotocol, a ticket, or the session) and ``/ws/<token>/``."""

from django.urls import path, re_path

from realtime.consumers import RealtimeConsumer

websocket_urlpatterns = [
    path("ws/", RealtimeConsumer.as_asgi()),
    re_path(r"^ws/(?P<token>[A-Za-z0-9_\-.]+)/$", RealtimeConsumer.as_asgi()),
]
