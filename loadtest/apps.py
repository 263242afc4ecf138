"""Django app configuration of the load tool: it only brings ``manage.py loadtest`` and ``loadtest_redis``."""

from django.apps import AppConfig


class LoadtestConfig(AppConfig):
    """The load tool as an app, so that its commands live with it and not in the realtime layer."""

    name = "loadtest"
    verbose_name = "Load tool"
