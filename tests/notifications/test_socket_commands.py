"""The ``notification.mark_read`` and ``notification.mark_all_read`` socket commands."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from notifications.models import Notification
from notifications.services import notification_create
from realtime.core.commands import registered_commands, run_command
from realtime.schemas import ProtocolError, wire_time

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]


def test_both_commands_are_registered_when_django_starts():
    assert {"notification.mark_read", "notification.mark_all_read"} <= set(registered_commands())


async def test_mark_read_answers_the_notification_and_the_count_and_publishes_once(user, events):
    notification = await sync_to_async(notification_create)(user=user, type="info", title="t", message="")
    await sync_to_async(notification_create)(user=user, type="info", title="t2", message="")

    answer = await run_command(user, "notification.mark_read", {"id": str(notification.id)})
    again = await run_command(user, "notification.mark_read", {"id": str(notification.id)})

    assert answer["notification"]["id"] == str(notification.id)
    assert answer["notification"]["read"] is True
    assert answer["count"] == 1
    assert again == answer
    assert (await sync_to_async(events)(user))[-2:] == [
        ("notification_read", {"ids": [str(notification.id)], "all": False}),
        ("unread_count", {"count": 1}),
    ]


async def test_mark_read_of_a_foreign_or_unknown_id_is_not_found(user, make_user):
    stranger = await sync_to_async(make_user)()
    foreign = await sync_to_async(notification_create)(user=stranger, type="info", title="t", message="")

    for notification_id in (str(foreign.id), str(uuid.uuid4())):
        with pytest.raises(ProtocolError) as error:
            await run_command(user, "notification.mark_read", {"id": notification_id})
        assert error.value.code == "not_found"
    assert (await Notification.objects.aget(pk=foreign.pk)).read_at is None


@pytest.mark.parametrize("args", [{}, {"id": 42}, {"id": "not-a-uuid"}, {"id": str(uuid.uuid4()), "extra": 1}])
async def test_mark_read_with_bad_args_is_an_invalid_message(user, args):
    with pytest.raises(ProtocolError) as error:
        await run_command(user, "notification.mark_read", args)

    assert error.value.code == "invalid_message"


async def test_mark_all_read_honours_before_and_answers_updated_and_count(user, events):
    now = timezone.now()
    await Notification.objects.abulk_create(
        [
            Notification(user=user, type="info", title="old", message="", created_at=now - timedelta(hours=2)),
            Notification(user=user, type="info", title="new", message="", created_at=now),
        ]
    )
    cutoff = now - timedelta(hours=1)

    answer = await run_command(user, "notification.mark_all_read", {"before": wire_time(cutoff)})
    rest = await run_command(user, "notification.mark_all_read", {})

    assert answer == {"updated": 1, "count": 1}
    assert rest == {"updated": 1, "count": 0}
    assert (await sync_to_async(events)(user))[:2] == [
        ("notification_read", {"ids": [], "all": True, "before": wire_time(cutoff)}),
        ("unread_count", {"count": 1}),
    ]


@pytest.mark.parametrize("args", [{"before": "soon"}, {"before": 5}, {"all": True}])
async def test_mark_all_read_with_bad_args_is_an_invalid_message(user, args):
    with pytest.raises(ProtocolError) as error:
        await run_command(user, "notification.mark_all_read", args)

    assert error.value.code == "invalid_message"
