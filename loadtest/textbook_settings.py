"""Minimal settings of the textbook Channels consumer (``loadtest.reference_textbook``).

Only what the tutorial setup needs: auth for the JWT's user, channels, and channels_redis's
``RedisChannelLayer`` with its default configuration (only the key prefix is per run, so runs
do not see each other's groups).
"""

from __future__ import annotations

import os

import dj_database_url

SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "channels"]
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
ROOT_URLCONF = "loadtest.textbook_settings"
urlpatterns: list = []
ASGI_APPLICATION = "loadtest.reference_textbook.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ["REDIS_URL"]], "prefix": os.environ.get("LOADTEST_LAYER_PREFIX", "asgi")},
    }
}
SIMPLE_JWT = {"ALGORITHM": "HS256", "SIGNING_KEY": SECRET_KEY}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
