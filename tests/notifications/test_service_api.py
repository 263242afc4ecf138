"""POST /api/notifications/: services and staff create persisted notifications, idempotently."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import Permission
from django.db import connections
from rest_framework.test import APIClient

from executions.services import team_create, team_membership_add
from notifications.models import IdempotentRequest, Notification
from tests.conftest import access_token_for

URL = "/api/notifications/"
KEY = "notify-key"


@pytest.fixture
def service(settings) -> APIClient:
    """A client holding a key with the notifications scope."""
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "API_KEYS": [f"{KEY}:notifications", "other-key"]}
    return APIClient(HTTP_AUTHORIZATION=f"ApiKey {KEY}")


def test_to_users_creates_one_row_each_and_delivers_them_live(
    service, make_user, django_capture_on_commit_callbacks, events
):
    alice, bob = make_user(), make_user()
    body = {"users": [str(alice.pk), bob.pk], "type": "success", "title": "Build done", "message": "green",
            "action": {"type": "open_build", "payload": {"id": 7}}}

    with django_capture_on_commit_callbacks(execute=True):
        response = service.post(URL, body, format="json")

    assert (response.status_code, response.json()) == (201, {"created": 2})
    rows = Notification.objects.order_by("user_id")
    assert [(n.user_id, n.type, n.title, n.message, n.action) for n in rows] == [
        (alice.pk, "success", "Build done", "green", {"type": "open_build", "payload": {"id": 7}}),
        (bob.pk, "success", "Build done", "green", {"type": "open_build", "payload": {"id": 7}}),
    ]
    assert [t for t, _ in events(alice)] == ["notification", "unread_count"]
    assert events(alice)[0][1]["id"] == str(rows[0].id)


def test_to_a_team_reaches_its_active_members_only(service, make_user):
    owner, member, inactive, outsider = make_user(), make_user(), make_user(), make_user()
    team = team_create(name="Core", slug="core", owner=owner)
    team_membership_add(team=team, user=member)
    team_membership_add(team=team, user=inactive)
    inactive.is_active = False
    inactive.save()

    response = service.post(URL, {"team": team.pk, "title": "Standup"}, format="json")

    assert (response.status_code, response.json()) == (201, {"created": 2})
    assert set(Notification.objects.values_list("user_id", flat=True)) == {owner.pk, member.pk}
    assert outsider.notifications.count() == 0


def test_to_everyone_reaches_every_active_user(service, make_user):
    users = [make_user() for _ in range(3)]
    make_user(is_active=False)

    response = service.post(URL, {"everyone": True, "type": "warning", "title": "Maintenance"}, format="json")

    assert (response.status_code, response.json()) == (201, {"created": 3})
    assert sorted(Notification.objects.values_list("user_id", flat=True)) == [u.pk for u in users]


def test_a_retry_with_the_same_idempotency_key_answers_the_first_answer_and_creates_nothing(service, make_user):
    alice = make_user()
    body = {"users": [alice.pk], "title": "once"}

    first = service.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="req-1")
    retry = service.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="req-1")
    other_key = service.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="req-2")

    assert (first.status_code, first.json()) == (201, {"created": 1})
    assert (retry.status_code, retry.json(), retry["Idempotent-Replayed"]) == (201, {"created": 1}, "true")
    assert "Idempotent-Replayed" not in first
    assert other_key.status_code == 201
    assert alice.notifications.count() == 2


def test_idempotency_keys_are_scoped_per_caller(service, settings, make_user):
    alice = make_user()
    other = APIClient(HTTP_AUTHORIZATION="ApiKey other-key")

    service.post(URL, {"users": [alice.pk], "title": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="same")
    response = other.post(URL, {"users": [alice.pk], "title": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="same")

    assert "Idempotent-Replayed" not in response
    assert alice.notifications.count() == 2


def test_the_same_key_with_another_body_is_422_and_creates_nothing(service, make_user):
    alice = make_user()
    service.post(URL, {"users": [alice.pk], "title": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    response = service.post(URL, {"users": [alice.pk], "title": "b"}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 422
    assert list(alice.notifications.values_list("title", flat=True)) == ["a"]


def test_a_refused_request_stores_no_answer_so_a_corrected_retry_goes_through(service, make_user):
    alice = make_user()

    refused = service.post(URL, {"users": [alice.pk], "type": "critical", "title": "a"}, format="json",
                           HTTP_IDEMPOTENCY_KEY="k")

    assert refused.status_code == 400
    assert IdempotentRequest.objects.count() == 0


def test_an_expired_key_may_be_used_again(service, settings, make_user):
    settings.RENUM_NOTIFICATIONS = {"IDEMPOTENCY_TTL_S": 0}
    alice = make_user()

    service.post(URL, {"users": [alice.pk], "title": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    again = service.post(URL, {"users": [alice.pk], "title": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert "Idempotent-Replayed" not in again
    assert alice.notifications.count() == 2
    assert IdempotentRequest.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_create_once(settings, make_user):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "API_KEYS": [KEY]}
    users = [make_user() for _ in range(5)]
    body = {"users": [u.pk for u in users], "title": "race"}
    answers: list[tuple[int, dict]] = []

    def post() -> None:
        try:
            response = APIClient(HTTP_AUTHORIZATION=f"ApiKey {KEY}").post(
                URL, body, format="json", HTTP_IDEMPOTENCY_KEY="race-1")
            answers.append((response.status_code, response.json()))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert answers == [(201, {"created": 5})] * 4
    assert Notification.objects.count() == 5


@pytest.mark.parametrize(("body", "field"), [
    ({"users": ["999999"], "title": "t"}, "users"),
    ({"users": ["abc"], "title": "t"}, "users"),
    ({"team": 999999, "title": "t"}, "team"),
    ({"users": ["1"], "type": "critical", "title": "t"}, "type"),
    ({"users": ["1"], "title": "t" * 201}, "title"),
    ({"users": ["1"], "title": "t", "message": "m" * 10_001}, "message"),
    ({"users": ["1"], "title": "t", "action": {"type": "x", "payload": "p" * 9000}}, "action"),
    ({"users": ["1"], "title": "t", "action": {"kind": "x"}}, "action"),
    ({"title": "t"}, "non_field_errors"),
    ({"users": ["1"], "everyone": True, "title": "t"}, "non_field_errors"),
])
def test_bad_requests_are_clear_400s_that_create_nothing(service, user, body, field):
    body = {**body, "users": [str(user.pk) if u == "1" else u for u in body["users"]]} if "users" in body else body

    response = service.post(URL, body, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert Notification.objects.count() == 0


def test_staff_with_the_permission_may_send_and_plain_users_may_not(make_user, user):
    staff = make_user(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="add_notification"))
    bare_staff = make_user(is_staff=True)
    clients = {}
    for name, who in {"staff": staff, "bare staff": bare_staff, "user": user}.items():
        clients[name] = APIClient(HTTP_AUTHORIZATION=f"Bearer {access_token_for(who)}")

    statuses = {name: c.post(URL, {"users": [user.pk], "title": "t"}, format="json").status_code
                for name, c in clients.items()}

    assert statuses == {"staff": 201, "bare staff": 403, "user": 403}
    assert user.notifications.count() == 1
