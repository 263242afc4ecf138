"""Pages of the project itself: the browser demo of the realtime client (no build step)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def demo(request: HttpRequest) -> HttpResponse:
    """The demo app: login, live notifications and execution progress over ``static/renum/realtime.js``.

    The page is static; it authenticates with JWTs from ``/api/auth/token/`` in the browser,
    so the view needs no session and passes only the endpoints the client talks to.
    """
    return render(request, "demo/index.html", {
        "config": {
            "socketPath": "/ws/",
            "pollPath": "/api/realtime/poll/",
            "apiRoot": "/api/",
        },
    })
