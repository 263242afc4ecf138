"""Django app configuration of the realtime transport."""

from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """Registers the built-in channel policies, the session receivers and the identity rechecks
    of every node when Django starts."""

    name = "realtime"
    verbose_name = "Realtime"

    def ready(self) -> None:
        from django.conf import settings
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import pre_save

        from realtime.core import channels, rechecks, sessions
        from realtime.fanout import housekeeping

        channels.register_builtin_policies()
        # Every node rechecks its sockets' users and cookie sessions (realtime.core.rechecks).
        housekeeping.register_jobs(*rechecks.JOBS)
        # Session-cookie sockets close when their session ends (realtime.core.sessions).
        user_logged_out.connect(sessions.on_logout, dispatch_uid="realtime.core.sessions.on_logout")
        pre_save.connect(sessions.on_user_save, sender=settings.AUTH_USER_MODEL,
                         dispatch_uid="realtime.core.sessions.on_user_save")
