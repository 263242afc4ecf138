"""REST API: authentication, pagination, filters, conditional GETs, ownership and bad input."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from notifications.models import Notification
from notifications.services import notification_create
from realtime.schemas import wire_time
from tests.conftest import access_token_for

LIST_URL = "/api/notifications/"
COUNT_URL = "/api/notifications/unread-count/"
READ_ALL_URL = "/api/notifications/read-all/"


def _detail_url(notification_id) -> str:
    return f"/api/notifications/{notification_id}/"


def _read_url(notification_id) -> str:
    return f"/api/notifications/{notification_id}/read/"


def _bulk(user, count: int, *, start=None, read: bool = False) -> list[Notification]:
    """``count`` notifications one second apart, the last one newest."""
    start = start or timezone.now() - timedelta(days=1)
    rows = [
        Notification(
            user=user,
            type="info",
            title=f"n{i}",
            message="",
            created_at=start + timedelta(seconds=i),
            read_at=timezone.now() if read else None,
        )
        for i in range(count)
    ]
    return Notification.objects.bulk_create(rows)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", LIST_URL),
        ("get", COUNT_URL),
        ("post", READ_ALL_URL),
        ("get", _detail_url(uuid.uuid4())),
        ("delete", _detail_url(uuid.uuid4())),
        ("post", _read_url(uuid.uuid4())),
    ],
)
def test_every_endpoint_requires_authentication(db, api_client, method, url):
    response = getattr(api_client, method)(url)

    assert response.status_code == 401


def test_list_returns_own_notifications_newest_first_in_the_socket_shape(auth_client, user, make_user):
    older = notification_create(user=user, type="info", title="older", message="a")
    newer = notification_create(
        user=user, type="error", title="newer", message="b", action={"type": "open", "payload": [1]}
    )
    notification_create(user=make_user(), type="info", title="someone else's", message="")

    response = auth_client.get(LIST_URL)

    assert response.status_code == 200
    assert response.json()["results"] == [
        {
            "id": str(newer.id),
            "user_id": str(user.pk),
            "type": "error",
            "title": "newer",
            "message": "b",
            "read": False,
            "created_at": wire_time(newer.created_at),
            "action": {"type": "open", "payload": [1]},
            "archived": False,
        },
        {
            "id": str(older.id),
            "user_id": str(user.pk),
            "type": "info",
            "title": "older",
            "message": "a",
            "read": False,
            "created_at": wire_time(older.created_at),
            "action": None,
            "archived": False,
        },
    ]
    assert response["X-Poll-Interval"] == "30"


def test_list_pages_follow_the_next_cursor_without_gaps_or_repeats(auth_client, user):
    _bulk(user, 55)

    first = auth_client.get(LIST_URL).json()
    second = auth_client.get(first["next"]).json()

    assert [n["title"] for n in first["results"]] == [f"n{i}" for i in range(54, 4, -1)]
    assert [n["title"] for n in second["results"]] == ["n4", "n3", "n2", "n1", "n0"]
    assert second["next"] is None


def test_list_page_size_can_be_chosen(auth_client, user):
    _bulk(user, 3)

    response = auth_client.get(LIST_URL, {"page_size": 2})

    assert [n["title"] for n in response.json()["results"]] == ["n2", "n1"]


@pytest.mark.parametrize(("unread", "titles"), [("true", ["unread"]), ("false", ["read"]), (None, ["unread", "read"])])
def test_list_filters_on_unread(auth_client, user, unread, titles):
    now = timezone.now()
    Notification.objects.create(
        user=user, type="info", title="read", message="", read_at=now, created_at=now - timedelta(seconds=1)
    )
    Notification.objects.create(user=user, type="info", title="unread", message="", created_at=now)

    response = auth_client.get(LIST_URL, {"unread": unread} if unread else {})

    assert [n["title"] for n in response.json()["results"]] == titles


def test_list_refuses_a_bad_unread_value(auth_client):
    response = auth_client.get(LIST_URL, {"unread": "maybe"})

    assert response.status_code == 400
    assert list(response.json()) == ["unread"]


def test_list_of_fifty_takes_a_bounded_number_of_queries(auth_client, user, django_assert_max_num_queries):
    _bulk(user, 60)

    # JWT user lookup, the ETag fingerprint, the page: never one query per notification.
    with django_assert_max_num_queries(3):
        response = auth_client.get(LIST_URL)

    assert len(response.json()["results"]) == 50


def test_list_answers_304_to_its_own_etag_until_something_changes(auth_client, user):
    notification = notification_create(user=user, type="info", title="t", message="")
    first = auth_client.get(LIST_URL)

    unchanged = auth_client.get(LIST_URL, HTTP_IF_NONE_MATCH=first["ETag"])
    weak = auth_client.get(LIST_URL, HTTP_IF_NONE_MATCH=f'"other", W/{first["ETag"]}')
    other_filter = auth_client.get(LIST_URL, {"unread": "true"}, HTTP_IF_NONE_MATCH=first["ETag"])
    auth_client.post(_read_url(notification.id))
    after_read = auth_client.get(LIST_URL, HTTP_IF_NONE_MATCH=first["ETag"])

    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged["ETag"] == first["ETag"]
    assert unchanged["X-Poll-Interval"] == "30"
    assert weak.status_code == 304
    assert other_filter.status_code == 200
    assert after_read.status_code == 200
    assert after_read.json()["results"][0]["read"] is True


def test_list_etag_is_per_user(make_user):
    alice, bob = make_user(), make_user()
    alice_client, bob_client = APIClient(), APIClient()
    alice_client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(alice)}")
    bob_client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(bob)}")

    alice_etag = alice_client.get(LIST_URL)["ETag"]
    response = bob_client.get(LIST_URL, HTTP_IF_NONE_MATCH=alice_etag)

    assert response.status_code == 200


def test_unread_count_counts_only_own_unread_and_answers_304(auth_client, user, make_user):
    _bulk(user, 3)
    _bulk(user, 2, read=True)
    _bulk(make_user(), 4)

    response = auth_client.get(COUNT_URL)
    again = auth_client.get(COUNT_URL, HTTP_IF_NONE_MATCH=response["ETag"])
    notification_create(user=user, type="info", title="one more", message="")
    changed = auth_client.get(COUNT_URL, HTTP_IF_NONE_MATCH=response["ETag"])

    assert response.status_code == 200
    assert response.json() == {"count": 3}
    assert response["X-Poll-Interval"] == "30"
    assert again.status_code == 304
    assert changed.status_code == 200
    assert changed.json() == {"count": 4}


def test_gets_never_change_state(auth_client, user):
    notification = notification_create(user=user, type="info", title="t", message="")

    auth_client.get(LIST_URL)
    auth_client.get(_detail_url(notification.id))
    auth_client.get(COUNT_URL)

    assert Notification.objects.get(pk=notification.pk).read_at is None


def test_detail_returns_own_notification(auth_client, user):
    notification = notification_create(user=user, type="warning", title="t", message="m")

    response = auth_client.get(_detail_url(notification.id))

    assert response.status_code == 200
    assert response.json()["id"] == str(notification.id)
    assert response.json()["type"] == "warning"


def test_foreign_and_missing_ids_answer_the_same_404(auth_client, make_user):
    foreign = notification_create(user=make_user(), type="info", title="not yours", message="")

    answers = [
        auth_client.get(_detail_url(foreign.id)),
        auth_client.get(_detail_url(uuid.uuid4())),
        auth_client.post(_read_url(foreign.id)),
        auth_client.delete(_detail_url(foreign.id)),
    ]

    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert answers[0].json() == answers[1].json()
    assert Notification.objects.get(pk=foreign.pk).read_at is None


def test_a_non_uuid_id_is_not_found(auth_client):
    assert auth_client.get("/api/notifications/42/").status_code == 404


def test_mark_read_twice_answers_200_and_publishes_once(auth_client, user, django_capture_on_commit_callbacks, events):
    notification = notification_create(user=user, type="info", title="t", message="")

    with django_capture_on_commit_callbacks(execute=True):
        first = auth_client.post(_read_url(notification.id))
        second = auth_client.post(_read_url(notification.id))

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["read"] is True
    assert second.json() == first.json()
    assert events(user) == [
        ("notification_read", {"ids": [str(notification.id)], "all": False}),
        ("unread_count", {"count": 0}),
    ]


def test_read_all_marks_up_to_before_and_answers_updated_and_count(auth_client, user):
    now = timezone.now()
    _bulk(user, 4, start=now - timedelta(hours=3))
    _bulk(user, 2, start=now - timedelta(minutes=5))

    response = auth_client.post(READ_ALL_URL, {"before": wire_time(now - timedelta(hours=1))}, format="json")
    rest = auth_client.post(READ_ALL_URL, {}, format="json")

    assert response.status_code == 200
    assert response.json() == {"updated": 4, "count": 2}
    assert rest.json() == {"updated": 2, "count": 0}


def test_read_all_refuses_a_bad_before(auth_client, user):
    _bulk(user, 1)

    response = auth_client.post(READ_ALL_URL, {"before": "yesterday"}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["before"]
    assert Notification.objects.filter(read_at__isnull=True).count() == 1


def test_delete_answers_204_then_404(auth_client, user, django_capture_on_commit_callbacks, events):
    notification = notification_create(user=user, type="info", title="t", message="")

    with django_capture_on_commit_callbacks(execute=True):
        deleted = auth_client.delete(_detail_url(notification.id))
    again = auth_client.delete(_detail_url(notification.id))

    assert deleted.status_code == 204
    assert again.status_code == 404
    assert Notification.objects.count() == 0
    assert events(user) == [("notification_deleted", {"ids": [str(notification.id)]}), ("unread_count", {"count": 0})]


def test_session_authenticated_clients_can_poll(client, user):
    client.force_login(user)
    notification_create(user=user, type="info", title="t", message="")

    response = client.get(COUNT_URL)

    assert response.json() == {"count": 1}
