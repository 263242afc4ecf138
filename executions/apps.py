"""Django app configuration of executions."""

from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    """Registers the app's event types, realtime channels, socket commands and runner keys when Django starts."""

    name = "executions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the event types, ``team:`` and ``execution:``, ``execution.cancel``, the service scope and
        the runner keys."""
        from executions.apis import SERVICE_SCOPE, runner_service_keys
        from executions.channels import register_execution_channels
        from executions.commands import register_execution_commands
        from executions.events import EVENT_TYPES
        from realtime import service_auth  # also registers the system check of the service keys
        from realtime.schemas import register_event_types

        register_event_types(EVENT_TYPES)
        register_execution_channels()
        register_execution_commands()
        service_auth.register_scope(SERVICE_SCOPE, "create executions for a team and report their progress")
        service_auth.register_key_source(
            runner_service_keys, description="a key of EXECUTION_RUNNER_KEYS (the `executions` scope only)")
