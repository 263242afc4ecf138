"""Django app configuration of executions."""

from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    """Registers the app's realtime channels and socket commands when Django starts."""

    name = "executions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register ``team:`` and ``execution:`` and the ``execution.cancel`` command."""
        from executions.channels import register_execution_channels
        from executions.commands import register_execution_commands
        from realtime import service_auth  # noqa: F401 - registers the system check of the service keys

        register_execution_channels()
        register_execution_commands()
