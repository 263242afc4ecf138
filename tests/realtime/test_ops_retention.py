"""Retention: notifications_prune deletes read notifications older than N days, in batches."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from notifications.models import Notification


@pytest.fixture
def notifications(user):
    """Notifications of every age and state, by title."""
    now = timezone.now()

    def make(title: str, *, created_days: float, read_days: float | None):
        return Notification.objects.create(
            user=user, title=title, created_at=now - timedelta(days=created_days),
            read_at=None if read_days is None else now - timedelta(days=read_days),
        )

    make("read 40 days ago", created_days=41, read_days=40)
    make("read 31 days ago", created_days=60, read_days=31)
    make("read 35 days ago", created_days=36, read_days=35)
    make("old, read yesterday", created_days=90, read_days=1)
    make("old, unread", created_days=100, read_days=None)
    make("new, read", created_days=2, read_days=1)


def remaining() -> list[str]:
    return sorted(Notification.objects.values_list("title", flat=True))


def test_deletes_only_notifications_read_longer_ago_in_batches(notifications, capsys):
    call_command("notifications_prune", "--read-older-than-days", "30", "--batch-size", "2")

    assert capsys.readouterr().out.startswith("deleted 3 notification(s) read before ")
    assert remaining() == ["new, read", "old, read yesterday", "old, unread"]


def test_reports_batches_and_is_idempotent(notifications, capsys):
    call_command("notifications_prune", "--read-older-than-days", "30", "--batch-size", "2")
    first = capsys.readouterr().out
    call_command("notifications_prune", "--read-older-than-days", "30", "--batch-size", "2")
    second = capsys.readouterr().out

    assert first.splitlines()[0].endswith(" in 2 batch(es)")
    assert second.startswith("deleted 0 notification(s)") and second.splitlines()[0].endswith(" in 0 batch(es)")
    assert len(remaining()) == 3


def test_dry_run_only_counts(notifications, capsys):
    call_command("notifications_prune", "--read-older-than-days", "30", "--dry-run")

    assert capsys.readouterr().out.startswith("would delete 3 notification(s) read before ")
    assert len(remaining()) == 6


def test_refuses_less_than_one_day(notifications):
    with pytest.raises(CommandError, match="at least 1"):
        call_command("notifications_prune", "--read-older-than-days", "0")

    assert len(remaining()) == 6


def test_expired_idempotency_keys_are_deleted_and_live_ones_kept(db, settings, capsys):
    from datetime import timedelta

    from django.utils import timezone

    from notifications.models import IdempotentRequest

    settings.RENUM_NOTIFICATIONS = {"IDEMPOTENCY_TTL_S": 3600}
    IdempotentRequest.objects.create(caller="service:a", key="old", request_hash="h",
                                     created_at=timezone.now() - timedelta(hours=2))
    IdempotentRequest.objects.create(caller="service:a", key="new", request_hash="h")

    call_command("notifications_prune", "--read-older-than-days", "30")

    assert capsys.readouterr().out.splitlines()[1] == "deleted 1 expired idempotency key(s)"
    assert list(IdempotentRequest.objects.values_list("key", flat=True)) == ["new"]
