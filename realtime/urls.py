"""Routes of the realtime HTTP API (mounted at /api/realtime/)."""

from django.urls import path

from realtime.apis import PublishApi, TicketApi

urlpatterns = [
    path("ticket/", TicketApi.as_view(), name="realtime-ticket"),
    path("publish/", PublishApi.as_view(), name="realtime-publish"),
    # poll/, sse/ and events/ are served before Django: realtime.transports.http.http_router.
]
