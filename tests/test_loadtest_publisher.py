"""The load tool's publisher: a notify run starts without the notifications of earlier runs."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from loadtest.publisher import _forget_earlier_runs
from notifications.models import Notification


@pytest.mark.django_db(transaction=True)  # VACUUM cannot run inside a transaction
def test_a_notify_run_deletes_earlier_runs_notifications_and_nothing_else():
    user = get_user_model().objects.create_user("lt-publisher", password="x")
    Notification.objects.bulk_create([
        Notification(user=user, title=f"loadtest {i}", action={"type": "loadtest", "payload": {"seq": i}})
        for i in range(3)
    ])
    kept = Notification.objects.create(user=user, title="a real one", action={"type": "open", "payload": {}})
    untyped = Notification.objects.create(user=user, title="no action")

    _forget_earlier_runs()

    assert set(Notification.objects.values_list("id", flat=True)) == {kept.id, untyped.id}
