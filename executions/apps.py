"""Django app configuration of executions."""

from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    """Registers the app's realtime channels and socket commands when Django starts."""

    name = "executions"
    default_auto_field = "django.db.models.BigAutoField"
