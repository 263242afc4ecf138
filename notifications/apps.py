"""Django app configuration of notifications."""

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """Registers the app's realtime channels and socket commands when Django starts."""

    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the socket commands that route to the notification services."""
        from notifications.socket_commands import register_notification_commands

        register_notification_commands()
