"""Admin: changelist, filters, bulk read/unread and delete through services, and the send page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission

from notifications.models import Notification
from notifications.services import notification_create

CHANGELIST_URL = "/admin/notifications/notification/"
SEND_URL = "/admin/notifications/notification/send/"


@pytest.fixture
def staff_client(client, make_user):
    """A logged-in superuser."""
    admin_user = make_user(username="admin", is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    return client


def _action(client, action: str, notifications) -> object:
    return client.post(
        CHANGELIST_URL,
        {"action": action, "_selected_action": [str(n.pk) for n in notifications]},
        follow=True,
    )


def test_changelist_lists_searches_and_filters_on_read(staff_client, make_user):
    alice, bob = make_user(username="alice"), make_user(username="bob")
    notification_create(user=alice, type="info", title="Deploy finished", message="")
    read = notification_create(user=bob, type="error", title="Deploy failed", message="")
    Notification.objects.filter(pk=read.pk).update(read_at=read.created_at)

    everything = staff_client.get(CHANGELIST_URL)
    unread = staff_client.get(CHANGELIST_URL, {"read": "no"})
    by_user = staff_client.get(CHANGELIST_URL, {"q": "bob"})
    errors = staff_client.get(CHANGELIST_URL, {"type__exact": "error"})

    assert everything.status_code == 200
    assert [n.title for n in everything.context["cl"].result_list] == ["Deploy failed", "Deploy finished"]
    assert [n.title for n in unread.context["cl"].result_list] == ["Deploy finished"]
    assert [n.title for n in by_user.context["cl"].result_list] == ["Deploy failed"]
    assert [n.title for n in errors.context["cl"].result_list] == ["Deploy failed"]
    assert SEND_URL.encode() in everything.content


def test_change_page_is_read_only(staff_client, user):
    notification = notification_create(user=user, type="info", title="Immutable", message="")

    page = staff_client.get(f"{CHANGELIST_URL}{notification.pk}/change/")
    posted = staff_client.post(f"{CHANGELIST_URL}{notification.pk}/change/", {"title": "Edited"})

    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert posted.status_code == 403
    assert Notification.objects.get().title == "Immutable"


def test_mark_read_and_unread_actions_go_through_services_and_publish(
    staff_client, make_user, django_capture_on_commit_callbacks, events
):
    alice, bob = make_user(), make_user()
    first = notification_create(user=alice, type="info", title="a1", message="")
    second = notification_create(user=alice, type="info", title="a2", message="")
    third = notification_create(user=bob, type="info", title="b1", message="")

    with django_capture_on_commit_callbacks(execute=True):
        response = _action(staff_client, "mark_read", [first, third])
    assert Notification.objects.filter(read_at__isnull=True).get().pk == second.pk
    assert b"2 notification(s) marked as read." in response.content
    assert events(alice) == [
        ("notification_read", {"ids": [str(first.pk)], "all": False}),
        ("unread_count", {"count": 1}),
    ]

    with django_capture_on_commit_callbacks(execute=True):
        response = _action(staff_client, "mark_unread", [first, second, third])
    assert Notification.objects.filter(read_at__isnull=True).count() == 3
    assert b"2 notification(s) marked as unread." in response.content
    assert events(alice)[-1] == ("unread_count", {"count": 2})
    assert events(bob) == [
        ("notification_read", {"ids": [str(third.pk)], "all": False}),
        ("unread_count", {"count": 0}),
        ("notification_unread", {"ids": [str(third.pk)]}),
        ("unread_count", {"count": 1}),
    ]


def test_delete_action_goes_through_the_service_and_publishes_counts(
    staff_client, user, django_capture_on_commit_callbacks, events
):
    keep = notification_create(user=user, type="info", title="keep", message="")
    drop = notification_create(user=user, type="info", title="drop", message="")

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            CHANGELIST_URL, {"action": "delete_selected", "_selected_action": [str(drop.pk)], "post": "yes"}
        )

    assert list(Notification.objects.values_list("pk", flat=True)) == [keep.pk]
    assert events(user) == [("notification_deleted", {"ids": [str(drop.pk)]}), ("unread_count", {"count": 1})]


def test_send_page_sends_to_selected_users_live(staff_client, make_user, django_capture_on_commit_callbacks, events):
    alice, bob, carol = make_user(), make_user(), make_user()

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            SEND_URL,
            {
                "users": [alice.pk, bob.pk],
                "type": "warning",
                "title": "Maintenance",
                "message": "Tonight",
                "action_type": "open_status",
                "action_payload": '{"page": "status"}',
            },
        )

    assert response.status_code == 302
    assert response["Location"] == CHANGELIST_URL
    assert sorted(Notification.objects.values_list("user_id", flat=True)) == sorted([alice.pk, bob.pk])
    notification = Notification.objects.get(user=alice)
    assert (notification.type, notification.title, notification.message, notification.action) == (
        "warning",
        "Maintenance",
        "Tonight",
        {"type": "open_status", "payload": {"page": "status"}},
    )
    assert [event_type for event_type, _ in events(alice)] == ["notification", "unread_count"]
    assert events(alice)[0][1]["title"] == "Maintenance"
    assert events(carol) == []


def test_send_page_sends_to_a_groups_active_members(staff_client, make_user):
    member, inactive, outsider = make_user(), make_user(is_active=False), make_user()
    group = Group.objects.create(name="ops")
    group.user_set.add(member, inactive)

    response = staff_client.post(SEND_URL, {"group": group.pk, "type": "info", "title": "Ops only", "message": ""})

    assert response.status_code == 302
    assert list(Notification.objects.values_list("user_id", flat=True)) == [member.pk]
    assert not Notification.objects.filter(user__in=[inactive, outsider]).exists()


def test_send_page_sends_to_everyone_active(staff_client, make_user):
    make_user(), make_user(), make_user(is_active=False)

    response = staff_client.post(SEND_URL, {"everyone": "on", "type": "success", "title": "Hello all", "message": ""})

    assert response.status_code == 302
    # The two users and the admin who sent it; the inactive user gets nothing.
    assert Notification.objects.count() == 3


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"type": "info", "title": "Nobody"}, b"Choose exactly one audience"),
        ({"everyone": "on", "group": "", "type": "info", "title": ""}, b"This field is required."),
        ({"everyone": "on", "type": "info", "title": "x", "action_payload": "[1]"}, b"An action payload needs"),
    ],
)
def test_send_page_shows_errors_and_sends_nothing(staff_client, user, data, error):
    response = staff_client.post(SEND_URL, data)

    assert response.status_code == 200
    assert error in response.content
    assert Notification.objects.count() == 0


def test_send_page_needs_the_add_permission(client, make_user):
    viewer = make_user(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_notification"))
    client.force_login(viewer)

    changelist = client.get(CHANGELIST_URL)
    send = client.get(SEND_URL)

    assert changelist.status_code == 200
    assert SEND_URL.encode() not in changelist.content
    assert send.status_code == 403


def test_archive_and_unarchive_actions_send_the_same_events_as_the_inbox(
    staff_client, user, django_capture_on_commit_callbacks, events
):
    note = notification_create(user=user, type="info", title="n", message="")

    with django_capture_on_commit_callbacks(execute=True):
        archived = _action(staff_client, "archive", [note])
    with django_capture_on_commit_callbacks(execute=True):
        unarchived = _action(staff_client, "unarchive", [note])

    assert b"1 notification(s) archived." in archived.content
    assert b"1 notification(s) unarchived." in unarchived.content
    assert events(user)[-4:] == [
        ("notification_archived", {"ids": [str(note.pk)]}), ("unread_count", {"count": 0}),
        ("notification_unarchived", {"ids": [str(note.pk)]}), ("unread_count", {"count": 1}),
    ]
