"""REST routes of notifications (mounted under /api/ by renum.urls)."""

from django.urls import path

from notifications.apis import (
    NotificationDetailApi,
    NotificationListApi,
    NotificationReadAllApi,
    NotificationReadApi,
    NotificationUnreadCountApi,
)

urlpatterns = [
    path("notifications/", NotificationListApi.as_view(), name="notification-list"),
    path("notifications/unread-count/", NotificationUnreadCountApi.as_view(), name="notification-unread-count"),
    path("notifications/read-all/", NotificationReadAllApi.as_view(), name="notification-read-all"),
    path("notifications/<uuid:notification_id>/", NotificationDetailApi.as_view(), name="notification-detail"),
    path("notifications/<uuid:notification_id>/read/", NotificationReadApi.as_view(), name="notification-read"),
]
