"""Django app configuration of notifications."""

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """Registers the app's event types and socket commands when Django starts."""

    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the app's event types and the socket commands that route to its services."""
        from notifications.events import EVENT_TYPES
        from notifications.socket_commands import register_notification_commands
        from realtime.schemas import register_event_types

        register_event_types(EVENT_TYPES)
        register_notification_commands()
