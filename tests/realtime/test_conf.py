"""The one settings accessor of every app (``realtime.conf.AppSettings``)."""

from __future__ import annotations

import pytest

from executions.conf import setting as executions_setting
from notifications.conf import setting as notifications_setting
from realtime.conf import setting as realtime_setting

APPS = [
    (realtime_setting, "RENUM_REALTIME", "HEARTBEAT_S", 25),
    (executions_setting, "RENUM_EXECUTIONS", "PAGE_SIZE", 50),
    (notifications_setting, "RENUM_NOTIFICATIONS", "MAX_USERS_PER_REQUEST", 10_000),
]


@pytest.mark.parametrize(("setting", "name", "key", "default"), APPS)
def test_an_unset_key_reads_its_default_and_a_changed_dict_is_read_anew(settings, setting, name, key, default):
    setattr(settings, name, {})
    assert setting(key) == default  # now remembered

    setattr(settings, name, {key: 7})
    assert setting(key) == 7

    setattr(settings, name, {key: 8})
    assert setting(key) == 8


@pytest.mark.parametrize(("setting", "name", "key", "default"), APPS)
def test_a_key_the_app_does_not_declare_is_a_key_error(setting, name, key, default):
    with pytest.raises(KeyError, match=f"unknown {name} setting 'NO_SUCH_KEY'"):
        setting("NO_SUCH_KEY")
