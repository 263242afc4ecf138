"""Services: what they store, and exactly which events reach Redis, after commit only."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from notifications.events import notification_payload
from notifications.models import Notification
from notifications.services import (
    notification_create,
    notification_create_many,
    notification_delete,
    notification_mark_all_read,
    notification_mark_read,
)
from realtime import relay as rt_relay
from realtime.models import OutboxEvent
from realtime.publish import Message, _prepared_message
from realtime.schemas import wire_time
from realtime.storage import randomness


def _bulk_users(count: int, *, prefix: str, is_active: bool = True) -> list:
    user_model = get_user_model()
    user_model.objects.bulk_create(
        [user_model(username=f"{prefix}{i}", is_active=is_active, password="!") for i in range(count)]
    )
    return list(user_model.objects.filter(username__startswith=prefix).order_by("pk"))


@pytest.mark.django_db(transaction=True)
def test_create_publishes_notification_then_count_only_after_commit(user, events):
    with transaction.atomic():
        notification = notification_create(
            user=user,
            type="success",
            title="Build done",
            message="All green",
            action={"type": "open_execution", "payload": {"id": "e1"}},
        )
        assert events(user) == []

    assert events(user) == [
        (
            "notification",
            {
                "id": str(notification.id),
                "user_id": str(user.pk),
                "type": "success",
                "title": "Build done",
                "message": "All green",
                "read": False,
                "created_at": wire_time(notification.created_at),
                "action": {"type": "open_execution", "payload": {"id": "e1"}},
                "archived": False,
            },
        ),
        ("unread_count", {"count": 1}),
    ]


@pytest.mark.django_db(transaction=True)
def test_create_publishes_nothing_when_the_transaction_rolls_back(user, events):
    with pytest.raises(RuntimeError), transaction.atomic():
        notification_create(user=user, type="info", title="Never", message="")
        raise RuntimeError("abort")

    assert Notification.objects.count() == 0
    assert events(user) == []


@pytest.mark.parametrize(
    "action",
    [{"type": 1}, {"type": ""}, {"payload": {}}, {"type": "open", "payload": 1, "extra": True}, "open", ["open"]],
)
def test_create_refuses_an_action_that_is_not_type_and_payload(user, action):
    with pytest.raises(ValidationError) as error:
        notification_create(user=user, type="info", title="t", message="m", action=action)

    assert "action" in error.value.message_dict
    assert Notification.objects.count() == 0


def test_create_keeps_an_action_without_payload_as_null_payload(user):
    notification = notification_create(user=user, type="info", title="t", message="m", action={"type": "open"})

    assert Notification.objects.get().action == {"type": "open", "payload": None}
    assert notification.action == {"type": "open", "payload": None}


def test_create_refuses_unknown_type_and_too_long_title(user):
    with pytest.raises(ValidationError) as error:
        notification_create(user=user, type="critical", title="x" * 201, message="")

    assert set(error.value.message_dict) == {"type", "title"}
    assert Notification.objects.count() == 0


@pytest.fixture
def patient_delivery(settings):
    """The delivery right after commit waits up to 5 s, not 40 ms: on a loaded machine the short
    attempt can time out and leave the rows to the relay, which changes what is queried."""
    from tests.redis_servers import reset_realtime_clients

    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "PUBLISH_ATTEMPT_TIMEOUT_S": 5}
    reset_realtime_clients()
    yield
    reset_realtime_clients()


def test_create_many_inserts_in_batches_with_a_bounded_number_of_queries(
    db, django_assert_max_num_queries, django_capture_on_commit_callbacks, events, patient_delivery
):
    users = _bulk_users(2500, prefix="bulk")

    # 3 id lookups (1 on PostgreSQL) + 3 grouped counts (1 on PostgreSQL) + 2 savepoint statements
    # + the INSERTs: 3 on PostgreSQL (batches of 1000), 26 on SQLite (Django caps an SQLite
    # statement at 999 parameters, and a row has 10 columns),
    # + per batch one outbox INSERT and, once delivered, one DELETE. A loop of saves would be 2500+.
    with django_assert_max_num_queries(40), django_capture_on_commit_callbacks(execute=True):
        created = notification_create_many(users=users, type="warning", title="Maintenance", message="At 22:00")

    assert created == 2500
    assert Notification.objects.filter(type="warning", title="Maintenance").count() == 2500
    for user in (users[0], users[1234], users[-1]):
        notification = Notification.objects.get(user=user)
        assert events(user) == [
            (
                "notification",
                {
                    "id": str(notification.id),
                    "user_id": str(user.pk),
                    "type": "warning",
                    "title": "Maintenance",
                    "message": "At 22:00",
                    "read": False,
                    "created_at": wire_time(notification.created_at),
                    "action": None,
                    "archived": False,
                },
            ),
            ("unread_count", {"count": 1}),
        ]


def test_create_many_writes_the_bytes_the_generic_path_writes(make_user, monkeypatch):
    """The template (payload and envelope serialized once, ids spliced in) gives every message,
    and the outbox record, byte for byte what ``notification_payload`` and ``_prepared`` give."""
    users = [make_user(), make_user(), make_user()]
    action = {"type": "open_execution", "payload": {"z": 1, "a": ["\u00e9t\u00e9", '"quoted"\\', None], "n": 1.5}}
    with transaction.atomic():
        notification_create_many(users=users, type="success", title='D\u00e9ploiement "v2" \u2713',
                                 message="line\nand\ttab </script>", action=action)
        [row] = OutboxEvent.objects.all()  # the unread counts are computed after commit, not stored
        records = rt_relay._decode(rt_relay.PUBLISH, row.records)

    assert [channel for channel, *_ in records] == [f"user:{u.pk}" for u in users]
    generic = []
    for channel, head, tail, _, _ in records:
        envelope = orjson.loads(head + b'1,"epoch":"e"' + tail)
        stored = Notification.objects.get(pk=envelope["payload"]["id"])
        notification = Notification(id=stored.id, user_id=stored.user_id, type="success", title=stored.title,
                                    message=stored.message, action=action, created_at=stored.created_at)
        with monkeypatch.context() as patched:
            patched.setattr(randomness, "uuid4_str", lambda envelope_id=envelope["id"]: envelope_id)
            generic.append(_prepared_message(Message(channel, "notification", notification_payload(notification)),
                                             envelope["timestamp"]))
    assert records == generic
    assert bytes(row.records) == rt_relay._encode(rt_relay.PUBLISH, generic)


def test_create_many_sends_each_recipient_their_own_unread_count(make_user, django_capture_on_commit_callbacks, events):
    busy, idle = make_user(), make_user()
    notification_create(user=busy, type="info", title="earlier", message="")

    with django_capture_on_commit_callbacks(execute=True):
        created = notification_create_many(users=[busy.pk, idle.pk], type="info", title="now", message="")

    assert created == 2
    assert events(busy)[-1] == ("unread_count", {"count": 2})
    assert events(idle)[-1] == ("unread_count", {"count": 1})


def test_create_many_to_everyone_skips_inactive_users(make_user):
    active = make_user()
    make_user(is_active=False)

    created = notification_create_many(everyone=True, type="info", title="Hello", message="all")

    assert created == 1
    assert list(Notification.objects.values_list("user_id", flat=True)) == [active.pk]


def test_create_many_drops_unknown_user_ids_and_duplicates(user):
    created = notification_create_many(users=[user, user.pk, 987654], type="info", title="Hi", message="")

    assert created == 1
    assert Notification.objects.get().user_id == user.pk


def test_create_many_needs_exactly_one_audience(user):
    with pytest.raises(ValidationError):
        notification_create_many(type="info", title="Hi", message="")
    with pytest.raises(ValidationError):
        notification_create_many(users=[user], everyone=True, type="info", title="Hi", message="")


def test_mark_read_is_idempotent_and_publishes_once(user, django_capture_on_commit_callbacks, events):
    notification = notification_create(user=user, type="info", title="t", message="m")
    other = notification_create(user=user, type="info", title="t2", message="m")

    with django_capture_on_commit_callbacks(execute=True):
        first = notification_mark_read(user=user, notification_id=notification.id)
        second = notification_mark_read(user=user, notification_id=str(notification.id))

    assert first.read_at is not None
    assert second.read_at == first.read_at
    assert Notification.objects.get(pk=other.pk).read_at is None
    assert events(user) == [
        ("notification_read", {"ids": [str(notification.id)], "all": False}),
        ("unread_count", {"count": 1}),
    ]


def test_mark_read_of_another_users_notification_raises_not_found(make_user):
    owner, stranger = make_user(), make_user()
    notification = notification_create(user=owner, type="info", title="t", message="m")

    with pytest.raises(Notification.DoesNotExist):
        notification_mark_read(user=stranger, notification_id=notification.id)

    assert Notification.objects.get(pk=notification.pk).read_at is None


def test_mark_all_read_works_in_batches_up_to_the_cutoff(user, make_user, django_capture_on_commit_callbacks, events):
    now = timezone.now()
    stranger = make_user()
    old = [
        Notification(user=user, type="info", title=f"old {i}", message="", created_at=now - timedelta(hours=2))
        for i in range(12)
    ]
    Notification.objects.bulk_create(
        [
            *old,
            Notification(user=user, type="info", title="new", message="", created_at=now),
            Notification(user=stranger, type="info", title="theirs", message="", created_at=now - timedelta(hours=3)),
        ]
    )
    cutoff = now - timedelta(hours=1)

    with django_capture_on_commit_callbacks(execute=True):
        updated = notification_mark_all_read(user=user, before=cutoff, batch_size=5)

    assert updated == 12
    still_unread = Notification.objects.filter(read_at__isnull=True).order_by("title")
    assert list(still_unread.values_list("title", flat=True)) == ["new", "theirs"]
    assert events(user) == [
        ("notification_read", {"ids": [], "all": True, "before": wire_time(cutoff)}),
        ("unread_count", {"count": 1}),
    ]
    assert events(stranger) == []


def test_mark_all_read_before_an_echoed_created_at_includes_that_notification(
    user, django_capture_on_commit_callbacks, events
):
    # The wire writes milliseconds; the row keeps microseconds the client never saw.
    created = timezone.now().replace(microsecond=123456)
    Notification.objects.bulk_create([
        Notification(user=user, type="info", title="seen", message="", created_at=created),
        Notification(user=user, type="info", title="later", message="", created_at=created + timedelta(milliseconds=1)),
    ])
    echoed = datetime.fromisoformat(wire_time(created))

    with django_capture_on_commit_callbacks(execute=True):
        updated = notification_mark_all_read(user=user, before=echoed)

    assert updated == 1
    assert list(Notification.objects.filter(read_at__isnull=True).values_list("title", flat=True)) == ["later"]
    assert events(user)[0] == ("notification_read", {"ids": [], "all": True, "before": wire_time(created)})


def test_mark_all_read_with_nothing_unread_changes_and_publishes_nothing(
    user, django_capture_on_commit_callbacks, events
):
    with django_capture_on_commit_callbacks(execute=True):
        updated = notification_mark_all_read(user=user)

    assert updated == 0
    assert events(user) == []


def test_delete_removes_it_and_publishes_the_new_count(user, make_user, django_capture_on_commit_callbacks, events):
    keep = notification_create(user=user, type="info", title="keep", message="")
    drop = notification_create(user=user, type="info", title="drop", message="")

    with django_capture_on_commit_callbacks(execute=True):
        notification_delete(user=user, notification_id=drop.id)

    assert list(Notification.objects.values_list("pk", flat=True)) == [keep.pk]
    assert events(user) == [("notification_deleted", {"ids": [str(drop.id)]}), ("unread_count", {"count": 1})]


def test_delete_of_another_users_notification_raises_and_keeps_it(make_user):
    owner, stranger = make_user(), make_user()
    notification = notification_create(user=owner, type="info", title="t", message="m")

    with pytest.raises(Notification.DoesNotExist):
        notification_delete(user=stranger, notification_id=notification.id)

    assert Notification.objects.filter(pk=notification.pk).exists()
