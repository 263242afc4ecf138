"""ASGI entry point: Django for HTTP, the realtime consumer for WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "renum.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from realtime.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The session middleware lets same-origin pages (the admin's live pages) connect with
        # their cookie; token and ticket authentication happen in the consumer.
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
