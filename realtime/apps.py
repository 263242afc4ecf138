"""Django app configuration of the realtime transport."""

from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """Registers the built-in channel policies when Django starts."""

    name = "realtime"
    verbose_name = "Realtime"

    def ready(self) -> None:
        from realtime import channels

        channels.register_builtin_policies()
