"""Selectors: unread counts, grouped counts, and the list fingerprint behind the ETag."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from notifications.models import Notification
from notifications.selectors import (
    notification_list,
    notification_list_version,
    notification_unread_count,
    notification_unread_counts,
)
from notifications.services import (
    notification_create,
    notification_delete,
    notification_mark_read,
    notification_mark_unread_many,
)
from realtime.schemas import wire_time


def test_unread_counts_of_many_users_come_from_one_grouped_query(make_user, django_assert_num_queries):
    alice, bob, carol = make_user(), make_user(), make_user()
    for _ in range(3):
        notification_create(user=alice, type="info", title="a", message="")
    read = notification_create(user=bob, type="info", title="b", message="")
    notification_mark_read(user=bob, notification_id=read.id)

    with django_assert_num_queries(1):
        counts = notification_unread_counts(user_ids=[alice.pk, bob.pk, carol.pk])

    assert counts == {alice.pk: 3}
    assert notification_unread_count(user=alice) == 3
    assert notification_unread_count(user=bob) == 0


def test_list_version_changes_with_every_write_and_only_with_the_data(user, make_user):
    versions = [notification_list_version(user=user)]
    first = notification_create(user=user, type="info", title="1", message="")
    versions.append(notification_list_version(user=user))
    second = notification_create(user=user, type="info", title="2", message="")
    versions.append(notification_list_version(user=user))
    notification_mark_read(user=user, notification_id=second.id)
    versions.append(notification_list_version(user=user))
    notification_mark_unread_many(notification_ids=[second.id])
    versions.append(notification_list_version(user=user))
    notification_delete(user=user, notification_id=first.id)
    versions.append(notification_list_version(user=user))
    notification_create(user=make_user(), type="info", title="someone else's", message="")

    assert all(before != after for before, after in zip(versions, versions[1:], strict=False))
    # Read then unread again is the same data as before the read, so the same version is right.
    assert versions[4] == versions[2]
    assert len(set(versions)) == 5
    assert notification_list_version(user=user) == versions[-1]


def test_bounds_echoed_from_a_created_at_keep_that_notification(user):
    # The wire writes milliseconds; the row keeps microseconds the client never saw.
    created = timezone.now().replace(microsecond=123456)
    Notification.objects.bulk_create([
        Notification(user=user, type="info", title="seen", message="", created_at=created),
        Notification(user=user, type="info", title="later", message="", created_at=created + timedelta(milliseconds=1)),
    ])
    echoed = datetime.fromisoformat(wire_time(created))

    def titles(**bounds):
        return list(notification_list(user=user, **bounds).values_list("title", flat=True))

    assert titles(created_before=echoed) == ["seen"]
    assert titles(created_after=echoed) == ["later", "seen"]
    assert titles(created_after=echoed, created_before=echoed) == ["seen"]
