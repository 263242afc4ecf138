"""Django app configuration of notifications."""

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """Registers the app's event types, socket commands and service scope when Django starts."""

    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the app's event types, the socket commands that route to its services, and the
        ``notifications`` scope of service keys (``POST /api/notifications/``)."""
        from notifications.apis import SERVICE_SCOPE
        from notifications.events import EVENT_TYPES
        from notifications.socket_commands import register_notification_commands
        from realtime import service_auth
        from realtime.schemas import register_event_types

        register_event_types(EVENT_TYPES)
        register_notification_commands()
        service_auth.register_scope(SERVICE_SCOPE, "POST /api/notifications/: persisted notifications")
