"""Django app configuration of notifications."""

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """Registers the app's event types and socket commands when Django starts."""

    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the app's event types and the socket commands that route to its services."""
        from notifications.events import register_notification_events
        from notifications.socket_commands import register_notification_commands

        register_notification_events()
        register_notification_commands()
