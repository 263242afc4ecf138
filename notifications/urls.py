"""REST routes of notifications (mounted under /api/ by renum.urls)."""

from django.urls import path

from notifications.apis import (
    NotificationArchiveApi,
    NotificationBulkApi,
    NotificationDetailApi,
    NotificationListApi,
    NotificationReadAllApi,
    NotificationReadApi,
    NotificationUnarchiveApi,
    NotificationUnreadApi,
    NotificationUnreadCountApi,
)

urlpatterns = [
    path("notifications/", NotificationListApi.as_view(), name="notification-list"),
    path("notifications/unread-count/", NotificationUnreadCountApi.as_view(), name="notification-unread-count"),
    path("notifications/read-all/", NotificationReadAllApi.as_view(), name="notification-read-all"),
    path("notifications/bulk/", NotificationBulkApi.as_view(), name="notification-bulk"),
    path("notifications/<uuid:notification_id>/", NotificationDetailApi.as_view(), name="notification-detail"),
    path("notifications/<uuid:notification_id>/read/", NotificationReadApi.as_view(), name="notification-read"),
    path("notifications/<uuid:notification_id>/unread/", NotificationUnreadApi.as_view(), name="notification-unread"),
    path("notifications/<uuid:notification_id>/archive/", NotificationArchiveApi.as_view(),
         name="notification-archive"),
    path("notifications/<uuid:notification_id>/unarchive/", NotificationUnarchiveApi.as_view(),
         name="notification-unarchive"),
]
