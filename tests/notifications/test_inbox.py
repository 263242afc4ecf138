"""The inbox: archive / unarchive, mark unread, delete, bulk actions, filters; each change tells every tab."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from notifications.models import Notification
from notifications.services import notification_create
from realtime.core.commands import registered_commands, run_command
from realtime.schemas import ProtocolError

LIST_URL = "/api/notifications/"


def _make(user, title: str, **fields) -> Notification:
    notification = notification_create(user=user, type=fields.pop("type", "info"), title=title, message="")
    if fields:
        Notification.objects.filter(pk=notification.pk).update(**fields)
        notification.refresh_from_db()
    return notification


def _titles(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["title"] for item in response.json()["results"]]


def test_archive_hides_it_from_the_inbox_and_the_count_and_tells_every_tab(
    auth_client, user, django_capture_on_commit_callbacks, events
):
    keep, old = _make(user, "keep"), _make(user, "old")

    with django_capture_on_commit_callbacks(execute=True):
        archived = auth_client.post(f"/api/notifications/{old.id}/archive/")
    again = auth_client.post(f"/api/notifications/{old.id}/archive/")

    assert (archived.status_code, archived.json()["archived"], again.status_code) == (200, True, 200)
    assert _titles(auth_client.get(LIST_URL)) == ["keep"]
    assert _titles(auth_client.get(LIST_URL + "?archived=true")) == ["old"]
    assert auth_client.get("/api/notifications/unread-count/").json() == {"count": 1}
    assert events(user)[-2:] == [("notification_archived", {"ids": [str(old.id)]}), ("unread_count", {"count": 1})]
    assert keep.archived_at is None


def test_unarchive_brings_it_back(auth_client, user, django_capture_on_commit_callbacks, events):
    note = _make(user, "n", archived_at=timezone.now())

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(f"/api/notifications/{note.id}/unarchive/")

    assert (response.status_code, response.json()["archived"]) == (200, False)
    assert _titles(auth_client.get(LIST_URL)) == ["n"]
    assert events(user)[-2:] == [("notification_unarchived", {"ids": [str(note.id)]}), ("unread_count", {"count": 1})]


def test_mark_unread_sends_its_own_event(auth_client, user, django_capture_on_commit_callbacks, events):
    note = _make(user, "n", read_at=timezone.now())

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(f"/api/notifications/{note.id}/unread/")

    assert (response.status_code, response.json()["read"]) == (200, False)
    assert events(user)[-2:] == [("notification_unread", {"ids": [str(note.id)]}), ("unread_count", {"count": 1})]


def test_single_actions_on_a_foreign_or_missing_id_are_404(auth_client, make_user):
    foreign = _make(make_user(), "theirs")

    for action in ("archive", "unarchive", "unread"):
        for notification_id in (foreign.id, uuid.uuid4()):
            assert auth_client.post(f"/api/notifications/{notification_id}/{action}/").status_code == 404
    assert Notification.objects.get(pk=foreign.pk).archived_at is None


@pytest.mark.parametrize("action", ["read", "unread", "archive", "unarchive", "delete"])
def test_bulk_actions_change_only_own_ids_and_answer_what_changed(
    auth_client, user, make_user, action, django_capture_on_commit_callbacks, events
):
    now = timezone.now()
    first = _make(user, "a", read_at=now if action == "unread" else None,
                  archived_at=now if action == "unarchive" else None)
    second = _make(user, "b", read_at=now if action == "unread" else None,
                   archived_at=now if action == "unarchive" else None)
    untouched = _make(user, "c")
    foreign = _make(make_user(), "theirs")
    ids = [str(first.id), str(second.id), str(foreign.id), str(uuid.uuid4())]

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post("/api/notifications/bulk/", {"action": action, "ids": ids}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert (body["action"], sorted(body["changed"])) == (action, sorted([str(first.id), str(second.id)]))
    event_type = {"read": "notification_read", "unread": "notification_unread", "archive": "notification_archived",
                  "unarchive": "notification_unarchived", "delete": "notification_deleted"}[action]
    sent = events(user)
    assert sent[-2][0] == event_type and sorted(sent[-2][1]["ids"]) == sorted(body["changed"])
    assert sent[-1] == ("unread_count", {"count": body["count"]})
    assert Notification.objects.filter(pk=foreign.pk, read_at=None, archived_at=None).exists()
    assert Notification.objects.filter(pk=untouched.pk, read_at=None, archived_at=None).exists()


@pytest.mark.parametrize("body", [
    {"action": "explode", "ids": [str(uuid.uuid4())]},
    {"action": "read", "ids": []},
    {"action": "read", "ids": ["nope"]},
    {"action": "read"},
])
def test_bulk_refuses_bad_input(auth_client, body):
    assert auth_client.post("/api/notifications/bulk/", body, format="json").status_code == 400


def test_list_filters_by_type_read_state_and_date_range(auth_client, user):
    now = timezone.now()
    _make(user, "old info", created_at=now - timedelta(days=3))
    _make(user, "new error", type="error", created_at=now - timedelta(hours=1))
    _make(user, "new warning read", type="warning", created_at=now - timedelta(minutes=5), read_at=now)

    def listed(query: str) -> list[str]:
        return _titles(auth_client.get(LIST_URL, query))

    after = (now - timedelta(days=1)).isoformat()
    before = (now - timedelta(minutes=30)).isoformat()
    assert listed({"type": "error"}) == ["new error"]
    assert listed({"type": ["error", "warning"]}) == ["new warning read", "new error"]
    assert listed({"unread": "false"}) == ["new warning read"]
    assert listed({"created_after": after}) == ["new warning read", "new error"]
    assert listed({"created_after": after, "created_before": before}) == ["new error"]
    assert auth_client.get(LIST_URL, {"type": "critical"}).status_code == 400
    assert auth_client.get(LIST_URL, {"created_after": "yesterday"}).status_code == 400


def test_the_list_etag_changes_when_something_is_archived(auth_client, user):
    note = _make(user, "n")
    etag = auth_client.get(LIST_URL)["ETag"]

    auth_client.post(f"/api/notifications/{note.id}/archive/")

    assert auth_client.get(LIST_URL, HTTP_IF_NONE_MATCH=etag).status_code == 200


# ------------------------------------------------------------------ socket commands


def test_the_bulk_socket_commands_are_registered():
    assert {"notification.mark_read_many", "notification.mark_unread", "notification.archive",
            "notification.unarchive", "notification.delete"} <= set(registered_commands())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_socket_commands_apply_to_own_ids_and_publish(user, make_user, events):
    mine = await sync_to_async(_make)(user, "mine")
    stranger = await sync_to_async(make_user)()
    theirs = await sync_to_async(_make)(stranger, "theirs")

    archived = await run_command(user, "notification.archive", {"ids": [str(mine.id), str(theirs.id)]})
    unread = await run_command(user, "notification.mark_unread", {"ids": [str(mine.id)]})
    deleted = await run_command(user, "notification.delete", {"ids": [str(mine.id)]})

    assert archived == {"changed": [str(mine.id)], "count": 0}
    assert unread == {"changed": [], "count": 0}  # it was unread already
    assert deleted == {"changed": [str(mine.id)], "count": 0}
    assert [t for t, _ in (await sync_to_async(events)(user))] == [
        "notification", "unread_count", "notification_archived", "unread_count", "notification_deleted", "unread_count",
    ]
    assert await Notification.objects.filter(pk=theirs.pk, archived_at=None).aexists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("args", [
    {}, {"ids": []}, {"ids": "x"}, {"ids": ["nope"]}, {"ids": [str(uuid.uuid4())], "x": 1},
    {"ids": [str(uuid.uuid4())] * 1001},
])
async def test_socket_bulk_commands_refuse_bad_args(user, args):
    with pytest.raises(ProtocolError) as error:
        await run_command(user, "notification.archive", args)

    assert error.value.code == "invalid_message"
