"""The OpenAPI schema against a live server: property-based requests (schemathesis) find no 5xx and no
response that breaks the schema.

Every operation of ``/api/schema/`` gets a few generated requests, both valid ones and ones that
break the schema (negative mode), with the credentials that operation takes: a user's JWT, or the
service key for the service API. Checked on every answer: it is not a server error, its body
matches the schema of its status code when the schema declares one, and its content type is
the declared one. Bounded: a handful of examples per operation, well under two minutes.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from executions.services import execution_create, team_create
from notifications.services import notification_create
from tests.conftest import access_token_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

KEY = "contract-key"
EXAMPLES_PER_OPERATION = 20
# Long-polling and streaming endpoints hold each request up to their timeout: they have their
# own tests, and a generated `timeout` would make this run last minutes.
SKIPPED_PATHS = {"/api/realtime/events/", "/api/realtime/poll/", "/api/realtime/sse/"}
SERVICE_OPERATIONS = {("POST", "/api/realtime/publish/"), ("POST", "/api/notifications/"),
                      ("POST", "/api/executions/{execution_id}/progress/")}


@pytest.fixture
def server(live_server_factory):
    """A server whose throttles do not get in the way of a few hundred requests.

    CPython's own garbage-collector thresholds: each request's sync work runs in a thread of
    its own, whose persistent PostgreSQL connection is closed only when the cyclic collector
    frees it; with the raised thresholds of ``REALTIME_GC_THRESHOLDS`` a few hundred quick
    requests hold that many idle connections and exhaust ``max_connections``. That is a
    connection-bound matter of its own (a pool per process fixes it), not the contract's.
    """
    return live_server_factory(REALTIME_API_KEYS=KEY, API_THROTTLE_ANON="100000/min", API_THROTTLE_USER="100000/min",
                               REALTIME_GC_THRESHOLDS="off")


def _credentials(method: str, path: str, token: str) -> dict[str, str]:
    if (method, path) in SERVICE_OPERATIONS:
        return {"Authorization": f"ApiKey {KEY}"}
    return {"Authorization": f"Bearer {token}"}


def _run(operation, mode, *, base_url: str, session: requests.Session, headers: dict[str, str]) -> int:
    """Send the generated examples of one operation in one mode; returns how many were sent."""
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION // 2, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(
            base_url=base_url, session=session, headers=headers, timeout=30,
            checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
        )

    check()
    return sent


def test_generated_requests_get_no_5xx_and_no_answer_that_breaks_the_schema(server, make_user):
    staff = make_user(is_staff=True, is_superuser=True)
    team = team_create(name="Contract", slug="contract", owner=staff)
    execution_create(team=team)
    for number in range(3):
        notification_create(user=staff, type="info", title=f"n{number}", message="")
    token = access_token_for(staff)
    schema = schemathesis.openapi.from_url(f"{server.http_url}/api/schema/?format=json", timeout=30)
    session = requests.Session()
    failures: list[str] = []
    tested = calls = 0

    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIPPED_PATHS:
            continue
        tested += 1
        headers = _credentials(operation.method.upper(), operation.path, token)
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            try:
                calls += _run(operation, mode, base_url=server.http_url, session=session, headers=headers)
            except Exception as exc:  # every operation is run; all failures are reported together
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")

    assert tested >= 15  # the schema really was read and walked
    assert failures == [], "\n\n".join(failures)
    print(f"{calls} requests to {tested} operations")
    assert calls >= tested * 4  # examples were generated and sent for every operation
