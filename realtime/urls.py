"""Routes of the realtime HTTP API (mounted at /api/realtime/)."""

from django.urls import path

from realtime.apis import EventsApi, PublishApi, TicketApi

urlpatterns = [
    path("ticket/", TicketApi.as_view(), name="realtime-ticket"),
    path("publish/", PublishApi.as_view(), name="realtime-publish"),
    path("events/", EventsApi.as_view(), name="realtime-events"),
]
