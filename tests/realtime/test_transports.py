"""The channel stream over HTTP: multiplexed long polls, server-sent events, the v1 events endpoint.

Driven through the project's ASGI application in-process (the same app uvicorn serves), with
the real Redis and database; a live-server test with a crowd of pollers is in test_http_crowd.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator

from realtime.publish import publish_rollback_unsafe
from realtime.transports.http import TIMEOUT_JITTER, decode_cursor, encode_cursor
from tests.conftest import access_token_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]

publish = sync_to_async(publish_rollback_unsafe)


def _scope(method: str, path: str, query: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 40000), "server": ("testserver", 80)}


def _headers(user: Any = None, token: str | None = None, extra: dict[str, str] | None = None,
             content_type: str | None = "application/json") -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"testserver")]
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    if user is not None or token is not None:
        headers.append((b"authorization", f"Bearer {token or access_token_for(user)}".encode()))
    for name, value in (extra or {}).items():
        headers.append((name.lower().encode(), value.encode()))
    return headers


class Response:
    """A complete HTTP answer from the ASGI app."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        """The body, parsed."""
        return orjson.loads(self.body)


async def call(method: str, path: str, *, user: Any = None, token: str | None = None, body: Any = None,
               query: str = "", raw: bytes | None = None, content_type: str | None = "application/json",
               extra: dict[str, str] | None = None, timeout: float = 10) -> Response:
    """One request to the project's ASGI application; waits for the whole answer."""
    from renum.asgi import application

    payload = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
    communicator = ApplicationCommunicator(
        application, _scope(method, path, query, _headers(user, token, extra, content_type)))
    await communicator.send_input({"type": "http.request", "body": payload, "more_body": False})
    start = await communicator.receive_output(timeout)
    chunks = []
    while True:
        message = await communicator.receive_output(timeout)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout)
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return Response(start["status"], headers, b"".join(chunks))


async def poll(user: Any, channels: dict[str, Any], timeout: float = 0, **kwargs: Any) -> Response:
    """``POST /api/realtime/poll/``."""
    return await call("POST", "/api/realtime/poll/", user=user, body={"channels": channels, "timeout": timeout},
                      **kwargs)


def position(published: Any) -> dict[str, Any]:
    """The position of a published message, as a poll names it."""
    return {"epoch": published.epoch, "offset": published.offset}


# ---------------------------------------------------------------------- multiplexed long polling


async def test_a_poll_answers_every_channel_with_its_own_position(user, make_user):
    other = await sync_to_async(make_user)()
    mine = await publish(f"user:{user.pk}", "system_event", {"n": 1})
    await publish(f"user:{user.pk}", "system_event", {"n": 2})
    everyone = await publish("broadcast", "system_event", {"b": 1})
    await publish("broadcast", "system_event", {"b": 2})

    response = await poll(user, {
        f"user:{user.pk}": {"epoch": mine.epoch, "offset": 0},
        "broadcast": position(everyone),
        f"user:{other.pk}": None,
        "nosuch:1": None,
        "bad name": None,
        "team:1": {"epoch": "e", "offset": -1},
    })
    channels = response.json()["channels"]

    assert response.status == 200 and response.headers["x-poll-interval"] == "0"
    assert channels[f"user:{user.pk}"]["recovered"] is True
    assert channels[f"user:{user.pk}"]["offset"] == 2
    assert [m["payload"] for m in channels[f"user:{user.pk}"]["messages"]] == [{"n": 1}, {"n": 2}]
    assert channels["broadcast"] == {"epoch": everyone.epoch, "offset": 2, "recovered": True,
                                     "messages": channels["broadcast"]["messages"]}
    assert [m["payload"] for m in channels["broadcast"]["messages"]] == [{"b": 2}]
    assert channels[f"user:{other.pk}"]["error"]["code"] == "forbidden"
    assert channels["nosuch:1"]["error"]["code"] == "not_found"
    assert channels["bad name"]["error"]["code"] == "invalid_message"
    assert channels["team:1"]["error"]["code"] == "invalid_message"


async def test_a_poll_waits_for_the_first_new_message_on_any_channel(user):
    mine = await publish(f"user:{user.pk}", "system_event", {"n": 0})
    everyone = await publish("broadcast", "system_event", {"b": 0})
    timer = threading.Timer(0.5, publish_rollback_unsafe, args=("broadcast", "system_event", {"b": 1}))
    timer.start()

    started = asyncio.get_running_loop().time()
    response = await poll(user, {f"user:{user.pk}": position(mine), "broadcast": position(everyone)}, timeout=10)
    waited = asyncio.get_running_loop().time() - started
    channels = response.json()["channels"]

    assert 0.3 < waited < 8
    assert channels[f"user:{user.pk}"] == {"epoch": mine.epoch, "offset": 1, "recovered": True, "messages": []}
    assert [(m["offset"], m["payload"]) for m in channels["broadcast"]["messages"]] == [(2, {"b": 1})]
    assert response.headers["x-poll-interval"] == "0"


async def test_a_poll_that_times_out_answers_its_positions(user):
    mine = await publish(f"user:{user.pk}", "system_event", {"n": 0})

    waited = await poll(user, {f"user:{user.pk}": position(mine)}, timeout=0.3)
    at_once = await poll(user, {f"user:{user.pk}": position(mine)}, timeout=0)

    assert waited.json()["channels"][f"user:{user.pk}"] == {
        "epoch": mine.epoch, "offset": 1, "recovered": True, "messages": []}
    assert waited.headers["x-poll-interval"] == "0"  # it waited already: poll again at once
    assert at_once.json() == waited.json() and at_once.headers["x-poll-interval"] == "1"


async def test_empty_polls_that_started_together_end_spread_over_the_last_fifth_of_their_timeout(user):
    """Clients that fell back together must not come back together every timeout (one herd)."""
    mine = await publish(f"user:{user.pk}", "system_event", {"n": 0})

    async def timed() -> float:
        started = time.monotonic()
        await poll(user, {f"user:{user.pk}": position(mine)}, timeout=1.0)
        return time.monotonic() - started

    waits = sorted(await asyncio.gather(*(timed() for _ in range(20))))

    assert waits[0] >= (1 - TIMEOUT_JITTER) - 0.02  # never before the last fifth (timer slack aside)
    assert waits[-1] <= 1.0 + 0.5
    assert waits[-1] - waits[0] >= 0.05  # spread, not one instant


async def test_a_poll_without_positions_answers_at_once_with_them(user):
    await publish("broadcast", "system_event", {"old": 1})

    response = await poll(user, {"broadcast": None}, timeout=20)

    entry = response.json()["channels"]["broadcast"]
    assert entry["offset"] == 1 and entry["messages"] == [] and entry["recovered"] is False


async def test_a_poll_from_a_lost_position_is_not_recovered_and_answers_at_once(user):
    await publish(f"user:{user.pk}", "system_event", {"n": 1})

    response = await poll(user, {f"user:{user.pk}": {"epoch": "gone", "offset": 1}}, timeout=20)

    entry = response.json()["channels"][f"user:{user.pk}"]
    assert entry["recovered"] is False and entry["messages"] == [] and entry["offset"] == 1


async def test_a_poll_follows_audience_rules(user, make_user):
    other = await sync_to_async(make_user)()
    start = await publish("broadcast", "system_event", {"all": 0})
    await publish("broadcast", "system_event", {"not": "me"}, exclude_users=[str(user.pk)])
    await publish("broadcast", "system_event", {"only": "other"}, target=[str(other.pk)])
    await publish("broadcast", "system_event", {"all": 1})

    mine = (await poll(user, {"broadcast": position(start)})).json()["channels"]["broadcast"]
    theirs = (await poll(other, {"broadcast": position(start)})).json()["channels"]["broadcast"]

    assert [m["payload"] for m in mine["messages"]] == [{"all": 1}]
    assert mine["offset"] == 4 and mine["recovered"] is True
    assert [m["payload"] for m in theirs["messages"]] == [{"not": "me"}, {"only": "other"}, {"all": 1}]


async def test_a_live_message_excluding_the_poller_does_not_wake_it(user):
    start = await publish("broadcast", "system_event", {"all": 0})
    threading.Timer(0.3, publish_rollback_unsafe, args=("broadcast", "system_event", {"x": 1}),
                    kwargs={"exclude_users": [str(user.pk)]}).start()
    threading.Timer(1.0, publish_rollback_unsafe, args=("broadcast", "system_event", {"all": 2})).start()

    response = await poll(user, {"broadcast": position(start)}, timeout=10)

    entry = response.json()["channels"]["broadcast"]
    assert [m["payload"] for m in entry["messages"]] == [{"all": 2}] and entry["offset"] == 3


async def test_a_poll_refuses_bad_requests_clearly(user):
    anonymous = await call("POST", "/api/realtime/poll/", body={"channels": {"broadcast": None}})
    bad_token = await call("POST", "/api/realtime/poll/", token="nope", body={"channels": {"broadcast": None}})
    not_json = await call("POST", "/api/realtime/poll/", user=user, raw=b"{nope")
    form = await call("POST", "/api/realtime/poll/", user=user, raw=b"channels=x",
                      content_type="application/x-www-form-urlencoded")
    no_channels = await call("POST", "/api/realtime/poll/", user=user, body={"channels": {}})
    long_wait = await call("POST", "/api/realtime/poll/", user=user, body={"channels": {"broadcast": None},
                                                                         "timeout": 31})
    unknown = await call("POST", "/api/realtime/poll/", user=user, body={"channels": {"broadcast": None}, "x": 1})
    get = await call("GET", "/api/realtime/poll/", user=user)
    huge = await call("POST", "/api/realtime/poll/", user=user, raw=b" " * (65 * 1024))

    assert anonymous.status == 401 and anonymous.json()["detail"] == "missing credentials"
    assert bad_token.status == 401 and "invalid token" in bad_token.json()["detail"]
    assert not_json.status == 400 and "invalid JSON" in not_json.json()["detail"]
    assert form.status == 415
    assert no_channels.status == 400
    assert long_wait.status == 400 and "0 to 30" in long_wait.json()["detail"]
    assert unknown.status == 400 and "x" in unknown.json()["detail"]
    assert get.status == 405 and get.headers["allow"] == "POST"
    assert huge.status == 413


async def test_a_poll_can_use_the_session_or_a_ticket(user, client):
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    ticket = await sync_to_async(_ticket_for)(user)

    by_session = await call("POST", "/api/realtime/poll/", body={"channels": {f"user:{user.pk}": None}},
                            extra={"cookie": cookie})
    by_ticket = await call("POST", "/api/realtime/poll/", body={"channels": {f"user:{user.pk}": None}},
                           query=f"ticket={ticket}")
    ticket_again = await call("POST", "/api/realtime/poll/", body={"channels": {f"user:{user.pk}": None}},
                              query=f"ticket={ticket}")

    assert by_session.status == 200 and "epoch" in by_session.json()["channels"][f"user:{user.pk}"]
    assert by_ticket.status == 200 and "epoch" in by_ticket.json()["channels"][f"user:{user.pk}"]
    assert ticket_again.status == 401 and "already used" in ticket_again.json()["detail"]


def _ticket_for(user: Any) -> str:
    from realtime.core import auth

    return auth.ticket_issue(user=user)[0]


async def test_waiting_polls_hold_no_thread_and_all_wake(user, make_user):
    users = [user] + [await sync_to_async(make_user)() for _ in range(4)]
    start = await publish("broadcast", "system_event", {"n": 0})
    threads_before = threading.active_count()

    polls = [asyncio.ensure_future(poll(users[i % len(users)], {"broadcast": position(start)}, timeout=20))
             for i in range(60)]
    await asyncio.sleep(1.5)  # every poll is waiting on the hub now
    threads_waiting = threading.active_count()
    await publish("broadcast", "system_event", {"n": 1})
    answers = await asyncio.wait_for(asyncio.gather(*polls), 20)

    # Django's sync views would hold a thread each while they wait; these hold none.
    assert threads_waiting <= threads_before + 2
    assert [[m["payload"] for m in a.json()["channels"]["broadcast"]["messages"]] for a in answers] == [[{"n": 1}]] * 60


# ---------------------------------------------------------------------- the v1 events endpoint


async def test_events_returns_missed_messages_in_the_envelope(user):
    first = await publish(f"user:{user.pk}", "system_event", {"n": 1})
    await publish(f"user:{user.pk}", "system_event", {"n": 2})

    body = (await call("GET", "/api/realtime/events/", user=user,
                       query=f"channel=user:{user.pk}&since={first.epoch}:0&timeout=0")).json()

    assert body["recovered"] is True and body["offset"] == 2 and body["epoch"] == first.epoch
    assert [(m["offset"], m["payload"]["n"]) for m in body["messages"]] == [(1, 1), (2, 2)]


async def test_events_long_poll_wakes_up_on_a_new_message(user):
    first = await publish(f"user:{user.pk}", "system_event", {"n": 1})
    threading.Timer(0.5, publish_rollback_unsafe, args=(f"user:{user.pk}", "system_event", {"n": 2})).start()

    started = asyncio.get_running_loop().time()
    response = await call("GET", "/api/realtime/events/", user=user,
                          query=f"channel=user:{user.pk}&since={first.epoch}:{first.offset}&timeout=10")
    waited = asyncio.get_running_loop().time() - started

    assert 0.3 < waited < 8
    assert [m["payload"] for m in response.json()["messages"]] == [{"n": 2}]
    assert response.headers["x-poll-interval"] == "0"


async def test_events_of_another_epoch_are_not_recovered(user):
    await publish(f"user:{user.pk}", "system_event", {"n": 1})

    body = (await call("GET", "/api/realtime/events/", user=user,
                       query=f"channel=user:{user.pk}&since=gone:1&timeout=0")).json()

    assert body["recovered"] is False and body["messages"] == []


async def test_events_are_isolated_between_users(user, make_user):
    other = await sync_to_async(make_user)()
    await publish(f"user:{other.pk}", "system_event", {"secret": 1})

    response = await call("GET", "/api/realtime/events/", user=user, query=f"channel=user:{other.pk}&timeout=0")

    assert response.status == 403
    assert b"secret" not in response.body


async def test_events_reject_bad_parameters(user):
    bad_name = await call("GET", "/api/realtime/events/", user=user, query="channel=bad%20name")
    bad_since = await call("GET", "/api/realtime/events/", user=user, query="channel=broadcast&since=nocolon")
    unknown = await call("GET", "/api/realtime/events/", user=user, query="channel=nosuch:1")
    anonymous = await call("GET", "/api/realtime/events/", query="channel=broadcast")

    assert bad_name.status == 400 and "channel" in bad_name.json()
    assert bad_since.status == 400 and "since" in bad_since.json()["detail"]
    assert unknown.status == 404
    assert anonymous.status == 401


# ---------------------------------------------------------------------- server-sent events


class Stream:
    """An open ``GET /api/realtime/sse/`` and its parsed events."""

    def __init__(self, communicator: ApplicationCommunicator) -> None:
        self.communicator = communicator
        self.buffer = b""
        self.status = 0
        self.headers: dict[str, str] = {}

    async def open(self, timeout: float = 5) -> Stream:
        """Send the request and read the response head."""
        await self.communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.communicator.receive_output(timeout)
        self.status = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return self

    async def event(self, timeout: float = 5) -> dict[str, Any]:
        """The next event or comment: {"event", "data", "id"} or {"comment"}."""
        while b"\n\n" not in self.buffer:
            message = await self.communicator.receive_output(timeout)
            self.buffer += message.get("body", b"")
            if not message.get("more_body", False) and b"\n\n" not in self.buffer:
                raise EOFError("the stream ended")
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        event: dict[str, Any] = {}
        for line in block.decode().split("\n"):
            if line.startswith(":"):
                event["comment"] = line[1:].strip()
                continue
            name, _, value = line.partition(": ")
            event[name] = value
        if "data" in event:
            event["data"] = orjson.loads(event["data"])
        return event

    async def events_until(self, predicate: Any, timeout: float = 5) -> list[dict[str, Any]]:
        """Events up to the first that matches."""
        seen = []
        while True:
            seen.append(await self.event(timeout))
            if predicate(seen[-1]):
                return seen

    async def close(self) -> None:
        """Disconnect, and let the handler end."""
        await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(5)
        # Let the hub read Redis's answer to the UNSUBSCRIBE the stream's end sent: a test
        # whose loop is torn down with that read in flight can hang in the teardown.
        await asyncio.sleep(0.2)


async def sse(user: Any = None, query: str = "", extra: dict[str, str] | None = None) -> Stream:
    """Open an event stream."""
    from renum.asgi import application

    communicator = ApplicationCommunicator(
        application, _scope("GET", "/api/realtime/sse/", query, _headers(user, extra=extra, content_type=None)))
    return await Stream(communicator).open()


async def test_a_stream_sends_each_envelope_as_an_event_with_a_cursor(user):
    stream = await sse(user, urlencode([("channel", f"user:{user.pk}"), ("channel", "broadcast")]))
    ready = await stream.event()
    await publish(f"user:{user.pk}", "system_event", {"n": 1})
    mine = await stream.event()
    everyone = await publish("broadcast", "unread_count", {"count": 3})
    theirs = await stream.event()
    await stream.close()

    assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
    assert ready["event"] == "ready" and set(ready["data"]["channels"]) == {f"user:{user.pk}", "broadcast"}
    assert mine["event"] == "system_event" and mine["data"]["payload"] == {"n": 1}
    assert theirs["event"] == "unread_count" and theirs["data"]["offset"] == everyone.offset
    assert decode_cursor(theirs["id"]) == {f"user:{user.pk}": (mine["data"]["epoch"], 1),
                                           "broadcast": (everyone.epoch, everyone.offset)}


async def test_last_event_id_resumes_every_channel(user):
    stream = await sse(user, urlencode([("channel", f"user:{user.pk}"), ("channel", "broadcast")]))
    await stream.event()
    await publish(f"user:{user.pk}", "system_event", {"n": 1})
    last = await stream.event()
    await stream.close()
    await publish(f"user:{user.pk}", "system_event", {"n": 2})  # missed while away
    await publish("broadcast", "system_event", {"b": 1})

    again = await sse(user, urlencode([("channel", f"user:{user.pk}"), ("channel", "broadcast")]),
                      extra={"last-event-id": last["id"]})
    events = [await again.event() for _ in range(3)]
    await again.close()

    assert events[0]["event"] == "ready"
    assert all(c["recovered"] for c in events[0]["data"]["channels"].values())
    assert sorted((e["data"]["channel"], e["data"]["payload"]) for e in events[1:]) == [
        ("broadcast", {"b": 1}), (f"user:{user.pk}", {"n": 2})]


async def test_since_resumes_a_fresh_stream_and_lost_positions_resync(user):
    first = await publish(f"user:{user.pk}", "system_event", {"n": 1})
    await publish(f"user:{user.pk}", "system_event", {"n": 2})
    cursor = encode_cursor({f"user:{user.pk}": (first.epoch, 1), "broadcast": ("lost-epoch", 7)})

    stream = await sse(user, urlencode([("channel", f"user:{user.pk}"), ("channel", "broadcast"), ("since", cursor)]))
    events = [await stream.event() for _ in range(3)]
    await stream.close()

    assert events[0]["data"]["channels"]["broadcast"]["recovered"] is False
    assert events[1]["event"] == "resync" and events[1]["data"]["channel"] == "broadcast"
    assert events[2]["data"]["payload"] == {"n": 2}
    assert decode_cursor(events[2]["id"])[f"user:{user.pk}"] == (first.epoch, 2)


async def test_a_stream_authenticates_by_ticket_and_reports_refused_channels(user, make_user):
    other = await sync_to_async(make_user)()
    ticket = await sync_to_async(_ticket_for)(user)

    stream = await sse(None, urlencode([("channel", "broadcast"), ("channel", f"user:{other.pk}"),
                                        ("ticket", ticket)]))
    ready = await stream.event()
    refused = await stream.event()
    await stream.close()

    assert stream.status == 200 and list(ready["data"]["channels"]) == ["broadcast"]
    assert refused["event"] == "channel_error"
    assert refused["data"] == {"channel": f"user:{other.pk}", "code": "forbidden",
                               "message": f"not allowed to subscribe to user:{other.pk}"}


async def test_a_stream_pings_while_idle(user, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "HEARTBEAT_S": 1}
    stream = await sse(user, "channel=broadcast")
    await stream.event()
    ping = await stream.event(timeout=5)
    await stream.close()

    assert ping == {"comment": "ping"}


async def test_a_stream_refuses_bad_requests_clearly(user, make_user):
    other = await sync_to_async(make_user)()
    no_channel = await call("GET", "/api/realtime/sse/", user=user, content_type=None)
    bad_cursor = await call("GET", "/api/realtime/sse/", user=user, query="channel=broadcast&since=%%%",
                            content_type=None)
    nothing_allowed = await call("GET", "/api/realtime/sse/", user=user, query=f"channel=user:{other.pk}",
                                 content_type=None)
    anonymous = await call("GET", "/api/realtime/sse/", query="channel=broadcast", content_type=None)

    assert no_channel.status == 400
    assert bad_cursor.status == 400 and "cursor" in bad_cursor.json()["detail"]
    assert nothing_allowed.status == 403
    assert nothing_allowed.json()["channels"][f"user:{other.pk}"]["code"] == "forbidden"
    assert anonymous.status == 401


async def test_a_stream_whose_reader_stops_reading_is_ended_by_its_session_outbox(user, settings):
    """The stream writes through its session's outbox, which ends a reader that falls
    ``OUTBOX_MAX_BYTES`` behind (a slow consumer, as a socket's), instead of queueing for it."""
    from prometheus_client import REGISTRY

    from realtime.transports import http

    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "OUTBOX_MAX_BYTES": 4000}
    requests: asyncio.Queue = asyncio.Queue()
    await requests.put({"type": "http.request", "body": b"", "more_body": False})
    sent: list[dict] = []
    opened = asyncio.Event()

    async def send(message: dict) -> None:
        sent.append(message)
        if message.get("more_body") and len(sent) > 2:
            await asyncio.Event().wait()  # the reader stopped reading after the first live event
        elif message.get("more_body"):
            opened.set()

    def slow_count() -> float:
        return REGISTRY.get_sample_value("renum_realtime_slow_consumer_disconnects_total") or 0.0

    slow_before = slow_count()
    scope = _scope("GET", "/api/realtime/sse/", f"channel=user:{user.pk}", _headers(user, content_type=None))
    handler = asyncio.ensure_future(http.sse_endpoint(scope, requests.get, send))
    await asyncio.wait_for(opened.wait(), 5)
    for number in range(40):  # some 9 KB of envelopes
        await publish(f"user:{user.pk}", "system_event", {"n": number, "pad": "x" * 200})
    await asyncio.wait_for(handler, 10)

    live = [m for m in sent[2:] if m.get("more_body")]
    assert [orjson.loads(m["body"].split(b"data: ")[1].split(b"\n")[0])["payload"]["n"] for m in live] == [0]
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert slow_count() == slow_before + 1


def test_an_envelope_position_is_read_from_its_head_whatever_its_type_and_payload():
    from realtime.schemas import envelope_bytes, envelope_parts
    from realtime.transports import http

    head, tail = envelope_parts(channel="room:a-1", message_type='odd","channel":"x', sender="s",
                                payload={"channel": "no", "offset": 9, "epoch": "no"})
    text = envelope_bytes(head, tail, offset=12, epoch="e7").decode()

    assert http._position_of(text) == ("room:a-1", 12, "e7")
    assert http._type_of(text) == 'odd","channel":"x'


def _team_of(user: Any, slug: str) -> int:
    from executions.services import team_create

    return team_create(name=slug, slug=slug, owner=user).pk


def _leave_team(user: Any, team_id: int) -> None:
    from executions.models import TeamMembership

    TeamMembership.objects.filter(user=user, team_id=team_id).delete()


async def test_a_granted_permission_is_asked_again_after_its_ttl(user, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "HTTP_PERMISSION_TTL_S": 0}
    asked_each_time = await sync_to_async(_team_of)(user, "ttl-zero")
    before = await poll(user, {f"team:{asked_each_time}": None})
    await sync_to_async(_leave_team)(user, asked_each_time)
    after = await poll(user, {f"team:{asked_each_time}": None})

    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "HTTP_PERMISSION_TTL_S": 60}
    remembered = await sync_to_async(_team_of)(user, "ttl-sixty")
    granted = await poll(user, {f"team:{remembered}": None})
    await sync_to_async(_leave_team)(user, remembered)
    within_ttl = await poll(user, {f"team:{remembered}": None})

    assert "epoch" in before.json()["channels"][f"team:{asked_each_time}"]
    assert after.json()["channels"][f"team:{asked_each_time}"]["error"]["code"] == "forbidden"
    assert "epoch" in granted.json()["channels"][f"team:{remembered}"]
    assert "epoch" in within_ttl.json()["channels"][f"team:{remembered}"]  # the documented window
