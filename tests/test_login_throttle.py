"""Failed password logins are throttled per username and per client IP (admin form and JWT endpoint)."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

PASSWORD = "pw-secret-123"
THROTTLED = "Too many failed login attempts. Try again in 15 minute(s)."


def _admin_login(username: str, password: str, ip: str = "10.1.1.1") -> tuple[int, str, bool]:
    client = Client(REMOTE_ADDR=ip)
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    return response.status_code, response.content.decode(), "_auth_user_id" in client.session


def test_five_wrong_passwords_then_the_right_one_is_refused(make_user):
    staff = make_user(is_staff=True)
    wrong = [_admin_login(staff.username, f"guess-{n}") for n in range(5)]

    status, page, logged_in = _admin_login(staff.username, PASSWORD)

    assert all(code == 200 and THROTTLED not in body and not ok for code, body, ok in wrong)
    assert (status, THROTTLED in page, logged_in) == (200, True, False)
    # Another address is refused too: the limit is the account's.
    assert _admin_login(staff.username, PASSWORD, ip="10.2.2.2")[2] is False


def test_one_address_trying_many_accounts_is_refused(make_user):
    staff = make_user(is_staff=True)
    for n in range(20):
        _admin_login(f"nobody-{n}", "guess")

    status, page, logged_in = _admin_login(staff.username, PASSWORD)
    elsewhere = _admin_login(staff.username, PASSWORD, ip="10.3.3.3")

    assert (status, THROTTLED in page, logged_in) == (200, True, False)
    assert elsewhere[2] is True  # another address still logs in


def test_a_correct_login_clears_the_usernames_failures(make_user):
    staff = make_user(is_staff=True)
    for _ in range(4):
        _admin_login(staff.username, "guess")
    assert _admin_login(staff.username, PASSWORD)[2] is True
    for _ in range(4):
        _admin_login(staff.username, "guess")

    assert _admin_login(staff.username, PASSWORD)[2] is True


def test_the_token_endpoint_is_throttled_with_429(user):
    client = APIClient(REMOTE_ADDR="10.4.4.4")
    statuses = [client.post("/api/auth/token/", {"username": user.username, "password": "guess"}).status_code
                for _ in range(5)]

    refused = client.post("/api/auth/token/", {"username": user.username, "password": PASSWORD})

    assert statuses == [401] * 5
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("Too many failed login attempts.")
    assert 1 <= int(refused["Retry-After"]) <= 900
