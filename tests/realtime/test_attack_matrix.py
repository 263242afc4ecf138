"""The attack matrix (docs/security.md) against a real server process: every attack is refused with its
documented code, nothing of a victim's data reaches the attacker, a bystander on the same server keeps
receiving its messages during floods, and the security events are recorded.

One uvicorn process serves the whole module (it shares the test database and the test Redis);
limits are lowered through its environment: 3 sockets per user, 50 connect attempts per IP per
minute. Attacks that must not touch those limits connect from 127.0.0.1; the connect flood comes
from 127.0.0.2 (any 127/8 address reaches the loopback server), so its per-IP counter is its own.
"""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import orjson
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from realtime.core import auth, security
from realtime.publish import publish_rollback_unsafe
from realtime.schemas import wire_time
from realtime.storage import redis as rt_redis
from tests.conftest import access_token_for
from tests.live import LiveServer

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

MAX_CONNECTIONS_PER_USER = 3
CONNECTS_PER_IP_PER_MINUTE = 50
MAX_INVALID_FRAMES = 20  # the default of RENUM_REALTIME["MAX_INVALID_FRAMES"]
MAX_FRAME_BYTES = 64 * 1024
ATTACKER_IP = "127.0.0.2"


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def server(django_db_setup):
    """One server process for the module, on the test database, with lowered limits."""
    with LiveServer(
        REALTIME_MAX_CONNECTIONS_PER_USER=str(MAX_CONNECTIONS_PER_USER),
        REALTIME_CONNECTS_PER_IP_PER_MINUTE=str(CONNECTS_PER_IP_PER_MINUTE),
    ) as live:
        yield live


@pytest.fixture(autouse=True)
def _close_thread_connections(close_thread_connections):
    """Every test here runs async code that touches the database."""


@pytest.fixture
async def users():
    """``await users(n)`` -> n fresh active users."""
    model = get_user_model()

    async def make(n: int) -> list[Any]:
        return [await sync_to_async(model.objects.create_user)(username=f"u-{uuid.uuid4().hex[:10]}",
                                                              password="pw-secret-123") for _ in range(n)]

    return make


def marker(label: str) -> str:
    """A unique string planted in a victim's payload; it must never reach an attacker."""
    return f"SECRET-{label}-{uuid.uuid4().hex}"


async def ws_open(server: LiveServer, *, token: str | None = None, path: str = "", **kwargs: Any):
    """A raw client connection (no frame read yet)."""
    subprotocols = ["renum.v1"] + ([f"bearer.{token}"] if token else [])
    return await websockets.connect(server.ws_url + path, subprotocols=subprotocols, proxy=None, open_timeout=10,
                                    **kwargs)


async def ws_welcome(server: LiveServer, user: Any, **kwargs: Any):
    """A client authenticated as ``user`` that got its welcome frame."""
    ws = await ws_open(server, token=access_token_for(user), **kwargs)
    welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome", welcome
    return ws


async def drain(ws, timeout: float = 5.0) -> tuple[list[str], Any]:
    """Every frame until the server closes (or ``timeout``): (frames, close frame or None)."""
    frames: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            frames.append(await asyncio.wait_for(ws.recv(), left))
    except TimeoutError:
        return frames, None
    except websockets.ConnectionClosed as closed:
        return frames, closed.rcvd
    return frames, None


async def request(ws, message: dict, timeout: float = 5.0) -> dict:
    """Send a command and return the frame that replies to it (skipping channel messages)."""
    await ws.send(orjson.dumps(message).decode())
    deadline = time.monotonic() + timeout
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if frame.get("reply_to") == message.get("id"):
            return frame


async def still_open(ws) -> bool:
    """The socket answers a ping."""
    return (await request(ws, {"type": "ping", "id": "alive?"}))["type"] == "pong"


def answers(frames: list[str]) -> list[dict[str, Any]]:
    """The frames that answer the client, without channel messages.

    Broadcast traffic may arrive at any time: Redis pub/sub ignores database numbers, so other
    runs sharing the Redis server publish to this server's ``broadcast`` too.
    """
    parsed = [orjson.loads(frame) for frame in frames]
    return [frame for frame in parsed if "channel" not in frame or "offset" not in frame]


async def recv_on(ws, channel: str, timeout: float = 5.0) -> str:
    """The next message of one channel (skipping any other frame)."""
    deadline = time.monotonic() + timeout
    while True:
        text = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
        if orjson.loads(text).get("channel") == channel:
            return text


async def leave_broadcast(sock) -> None:
    """Unsubscribe an in-process socket from ``broadcast`` so that exact frame counts hold."""
    await sock.send({"type": "unsubscribe", "id": "quiet", "channel": "broadcast"})
    await sock.recv_until(lambda f: f.get("reply_to") == "quiet")


def assert_no_leak(frames: list[str], *secrets: str) -> None:
    """Not one frame the attacker received contains a victim's marker."""
    for secret in secrets:
        assert not any(secret in frame for frame in frames), f"{secret} leaked"


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    try:
        with _opener.open(urllib.request.Request(url, method=method, headers=headers), timeout=35) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def http(method: str, url: str, *, token: str | None = None) -> tuple[int, bytes]:
    """An HTTP request to the live server (JWT bearer when given)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await asyncio.to_thread(_http, method, url, headers)


def events(kind: str) -> list[dict[str, Any]]:
    """Recorded security events of one kind, newest first."""
    return [event for event in security.recent_events(500) if event["kind"] == kind]


class Bystander:
    """A normal user on the same server; measures the delivery of its personal messages during an attack."""

    def __init__(self, server: LiveServer, user: Any) -> None:
        self.server, self.user = server, user
        self.latencies: dict[int, float] = {}
        self.run = uuid.uuid4().hex

    async def __aenter__(self) -> Bystander:
        self.ws = await ws_welcome(self.server, self.user)
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.reader.cancel()
        await self.ws.close()

    async def _read(self) -> None:
        async for text in self.ws:
            frame = orjson.loads(text)
            if frame.get("channel") == f"user:{self.user.pk}" and frame["payload"].get("run") == self.run:
                self.latencies[frame["payload"]["seq"]] = time.monotonic() - frame["payload"]["sent"]

    async def during(self, attack, messages: int = 20, interval: float = 0.03):
        """Run the attack while ``messages`` personal messages are published to the bystander."""

        async def publisher() -> None:
            for seq in range(messages):
                payload = {"run": self.run, "seq": seq, "sent": time.monotonic()}
                await asyncio.to_thread(publish_rollback_unsafe, f"user:{self.user.pk}", "system_event", payload)
                await asyncio.sleep(interval)

        result, _ = await asyncio.gather(attack, publisher())
        self.expected = messages
        return result

    async def assert_served(self, p95_bound_s: float = 1.0) -> None:
        """Every message arrived, p95 latency under a generous bound (no starvation), socket still open."""
        deadline = time.monotonic() + 5
        while len(self.latencies) < self.expected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert sorted(self.latencies) == list(range(self.expected))
        ordered = sorted(self.latencies.values())
        p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
        assert p95 < p95_bound_s, ordered
        self.reader.cancel()
        assert await still_open(self.ws)


# ------------------------------------------------------------------ another user's channel


async def test_another_users_channel_cannot_be_read_subscribed_or_published(server, users):
    alice, bob = await users(2)  # alice attacks bob
    ws_a, ws_b = await ws_welcome(server, alice), await ws_welcome(server, bob)
    secret = marker("bob")
    await asyncio.to_thread(publish_rollback_unsafe, f"user:{bob.pk}", "system_event", {"secret": secret + "-old"})

    answers = [await request(ws_a, {"type": "subscribe", "id": f"s{n}", "channel": name, **extra}) for n, (name, extra)
               in enumerate([(f"user:{bob.pk}", {}), (f"user:{bob.pk}", {"since": {"epoch": "x", "offset": 0}}),
                             (f"user:0{bob.pk}", {}), (f"USER:{bob.pk}", {}), (f"user:{bob.pk} ", {})])]
    published = await request(ws_a, {"type": "publish", "id": "p", "channel": f"user:{bob.pk}", "payload": {}})
    await asyncio.to_thread(publish_rollback_unsafe, f"user:{bob.pk}", "system_event", {"secret": secret})
    polled = await http("GET", f"{server.http_url}/api/realtime/events/?channel=user:{bob.pk}&since=x:0&timeout=0",
                        token=access_token_for(alice))

    assert [a["payload"]["code"] for a in answers] == [
        "forbidden", "forbidden", "forbidden", "not_found", "invalid_message"]
    assert published["payload"]["code"] == "forbidden"
    assert polled[0] == 403
    assert secret.encode() not in polled[1]
    assert (await recv_on(ws_b, f"user:{bob.pk}")).count(secret) == 1  # the victim does get it
    frames, _ = await drain(ws_a, timeout=0.5)
    assert_no_leak(frames + [orjson.dumps(a).decode() for a in answers], secret)
    assert {e["user_id"] for e in events("forbidden")} == {str(alice.pk)}
    assert len(events("forbidden")) == 4  # three forbidden subscribes and the publish
    await ws_a.close()
    await ws_b.close()


# ------------------------------------------------------------------ another team's execution


def _two_teams_and_a_running_execution(alice: Any, bob: Any, secret: str):
    from executions.services import execution_create, execution_start, execution_update_progress, team_create

    team_a = team_create(name="A", slug=f"a-{uuid.uuid4().hex[:8]}", owner=alice)
    team_b = team_create(name="B", slug=f"b-{uuid.uuid4().hex[:8]}", owner=bob)
    execution = execution_start(execution=execution_create(team=team_b, created_by=bob))
    execution = execution_update_progress(execution=execution, progress=10, current_step=secret)
    return team_a, team_b, execution


def _progress(execution: Any, secret: str) -> None:
    from executions.services import execution_update_progress

    execution_update_progress(execution=execution, progress=50, current_step=secret)


async def test_another_teams_execution_is_invisible(server, users):
    alice, bob = await users(2)  # alice (team A) attacks bob's team B
    secret, later = marker("exec"), marker("exec-live")
    team_a, team_b, execution = await sync_to_async(_two_teams_and_a_running_execution)(alice, bob, secret)
    ws_a, ws_b = await ws_welcome(server, alice), await ws_welcome(server, bob)
    token_a = access_token_for(alice)

    own = await request(ws_a, {"type": "subscribe", "id": 0, "channel": f"team:{team_a.pk}"})
    refused = [await request(ws_a, {"type": "subscribe", "id": n, "channel": channel}) for n, channel in enumerate(
        [f"team:{team_b.pk}", f"execution:{execution.pk}", f"execution:{str(execution.pk).upper()}"], start=1)]
    cancel = await request(ws_a, {"type": "command", "id": 9, "payload": {
        "name": "execution.cancel", "args": {"execution_id": str(execution.pk)}}})
    detail = await http("GET", f"{server.http_url}/api/executions/{execution.pk}/", token=token_a)
    listing = await http("GET", f"{server.http_url}/api/executions/?team={team_b.pk}", token=token_a)
    polls = [await http("GET", f"{server.http_url}/api/realtime/events/?channel={channel}&since=x:0&timeout=1",
                        token=token_a) for channel in (f"team:{team_b.pk}", f"execution:{execution.pk}")]
    assert (await request(ws_b, {"type": "subscribe", "id": 1, "channel": f"team:{team_b.pk}"}))["type"] == "subscribed"
    await sync_to_async(_progress)(execution, later)

    assert own["type"] == "subscribed"
    assert [r["payload"]["code"] for r in refused] == ["forbidden"] * 3
    assert cancel["payload"]["code"] == "not_found"  # the same answer as for an id that does not exist
    assert detail[0] == 404
    assert listing[0] == 200 and orjson.loads(listing[1])["results"] == []
    assert [status for status, _ in polls] == [403, 403]
    assert later in await recv_on(ws_b, f"team:{team_b.pk}")  # the member gets the update
    frames, _ = await drain(ws_a, timeout=0.5)
    everything = frames + [orjson.dumps(r).decode() for r in refused + [cancel]] + [
        body.decode() for _, body in [detail, listing, *polls]]
    assert_no_leak(everything, secret, later)  # the id itself is the attacker's input, echoed in errors
    await ws_a.close()
    await ws_b.close()


# ------------------------------------------------------------------ forged and stolen credentials


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


async def crafted_token(case: str, victim: Any, attacker: Any) -> str:
    """A token an attacker could present, for each refused case of the matrix."""
    claims = dict(AccessToken.for_user(victim).payload)
    secret = settings.SIMPLE_JWT["SIGNING_KEY"]
    if case == "forged_signature":
        return jwt.encode(claims, "an-attackers-own-secret-of-32-bytes-or-more", algorithm="HS256")
    if case == "alg_none":
        return jwt.encode(claims, None, algorithm="none")
    if case == "alg_none_by_hand":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    if case == "alg_hs512_same_secret":
        return jwt.encode(claims, secret, algorithm="HS512")
    if case == "tampered_user_id":
        header, _, signature = access_token_for(attacker).split(".")
        return f"{header}.{_b64(claims)}.{signature}"
    if case == "expired":
        token = AccessToken.for_user(victim)
        token.set_exp(lifetime=-timedelta(seconds=5))
        return str(token)
    if case == "refresh_as_access":
        return str(RefreshToken.for_user(victim))
    token = access_token_for(victim)
    if case == "deleted_user":
        await sync_to_async(victim.delete)()
    elif case == "inactive_user":
        await sync_to_async(get_user_model().objects.filter(pk=victim.pk).update)(is_active=False)
    return token


CRAFTED = ["forged_signature", "alg_none", "alg_none_by_hand", "alg_hs512_same_secret", "tampered_user_id",
           "expired", "refresh_as_access", "deleted_user", "inactive_user"]


@pytest.mark.parametrize("case", CRAFTED)
async def test_crafted_token_at_connect_is_closed_4001(server, users, case):
    victim, attacker = await users(2)
    secret = marker(case)
    await asyncio.to_thread(publish_rollback_unsafe, f"user:{victim.pk}", "system_event", {"secret": secret})
    token = await crafted_token(case, victim, attacker)

    results = []
    for path, bearer in (("", token), (f"{token}/", None)):  # subprotocol, then the path token
        ws = await ws_open(server, token=bearer, path=path)
        results.append(await drain(ws))

    for frames, close in results:
        assert frames == []  # not even a welcome
        assert close.code == 4001 and close.reason
    assert len(events("auth_failure")) == 2


@pytest.mark.parametrize("case", CRAFTED)
async def test_crafted_token_in_auth_refresh_is_refused_and_the_session_unchanged(server, users, case):
    owner, victim, attacker = await users(3)
    ws = await ws_welcome(server, owner)
    token = await crafted_token(case, victim, attacker)

    answer = await request(ws, {"type": "auth.refresh", "id": "r", "token": token})

    assert answer["type"] == "error" and answer["payload"]["code"] == "unauthorized"
    assert await still_open(ws)
    assert (await request(ws, {"type": "subscribe", "id": "v", "channel": f"user:{victim.pk}"}))["payload"][
        "code"] == "forbidden"  # still the owner, not the victim
    await ws.close()


async def test_a_refused_in_band_refresh_is_recorded_as_an_auth_failure(connect, users):
    (owner,) = await users(1)
    _, sock, _ = await connect(owner)

    await sock.send({"type": "auth.refresh", "id": 1, "token": "x.y.z"})

    assert (await sock.recv_until(lambda f: f.get("reply_to") == 1))["payload"]["code"] == "unauthorized"
    assert [e["user_id"] for e in events("auth_failure")] == [str(owner.pk)]


async def test_in_band_refresh_extends_the_session_and_expiry_closes_4011(server, users):
    (user,) = await users(1)
    short, longer = AccessToken.for_user(user), AccessToken.for_user(user)
    short.set_exp(lifetime=timedelta(seconds=2))
    longer.set_exp(lifetime=timedelta(seconds=4))
    ws = await ws_open(server, token=str(short))
    await ws.recv()  # welcome

    refreshed = await request(ws, {"type": "auth.refresh", "id": 1, "token": str(longer)})
    await asyncio.sleep(3)  # past the first token's expiry and at least one expiry sweep
    alive = await still_open(ws)
    frames, close = await drain(ws, timeout=10)  # expiry + one 2 s sweep, with room for a loaded machine

    assert refreshed["type"] == "auth.refreshed"
    assert refreshed["payload"]["expires_at"] == wire_time(datetime.fromtimestamp(longer["exp"], UTC))
    assert alive
    assert answers(frames) == [] and (close.code, close.reason) == (4011, "token expired")


# ------------------------------------------------------------------ tickets


async def test_ticket_replay_race_and_expiry_are_refused(server, users):
    (user,) = await users(1)
    status, body = await http("POST", f"{server.http_url}/api/realtime/ticket/", token=access_token_for(user))
    ticket = orjson.loads(body)["ticket"]
    expiring = "expiring-" + uuid.uuid4().hex
    rt_redis.sync_client().set(auth.ticket_key(expiring), str(user.pk), px=1000)
    raced = (await http("POST", f"{server.http_url}/api/realtime/ticket/", token=access_token_for(user)))[1]
    raced_ticket = orjson.loads(raced)["ticket"]

    first = await ws_open(server, path=f"?ticket={ticket}")
    welcome = orjson.loads(await first.recv())
    replay = await drain(await ws_open(server, path=f"?ticket={ticket}"))
    racers = await asyncio.gather(*(ws_open(server, path=f"?ticket={raced_ticket}") for _ in range(5)))
    race = await asyncio.gather(*(drain(ws, timeout=1.5) for ws in racers))
    guessed = await drain(await ws_open(server, path=f"?ticket={uuid.uuid4().hex}"))
    await asyncio.sleep(1.2)
    expired = await drain(await ws_open(server, path=f"?ticket={expiring}"))

    assert status == 201 and welcome["type"] == "welcome" and welcome["payload"]["user_id"] == str(user.pk)
    assert replay[1].code == 4001 and "already used" in replay[1].reason
    welcomed = [frames for frames, close in race if close is None]
    assert len(welcomed) == 1 and '"welcome"' in welcomed[0][0]  # GETDEL: one winner of five
    assert sorted(close.code for _, close in race if close is not None) == [4001] * 4
    assert guessed[1].code == 4001 and expired[1].code == 4001
    assert len(events("auth_failure")) == 1 + 4 + 2
    await first.close()
    for ws in racers:
        await ws.close()


# ------------------------------------------------------------------ origins (cross-site WebSocket hijacking)


def _session_cookie(user: Any) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example",
                                    "chrome-extension://abcdef", "file://"])
async def test_foreign_origin_is_refused_with_http_403_even_with_the_victims_cookie(server, users, origin):
    (victim,) = await users(1)
    cookie = await sync_to_async(_session_cookie)(victim)

    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(server.ws_url, origin=origin, subprotocols=["renum.v1"], proxy=None,
                                 additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"})
    same_origin = await websockets.connect(server.ws_url, origin=server.http_url, subprotocols=["renum.v1"],
                                           proxy=None,
                                           additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"})
    welcome = orjson.loads(await asyncio.wait_for(same_origin.recv(), 5))

    assert refused.value.response.status_code == 403
    assert welcome["payload"]["user_id"] == str(victim.pk)  # the same cookie works from the site itself
    assert [e["detail"] for e in events("origin_rejected")] == [origin]
    await same_origin.close()


# ------------------------------------------------------------------ floods (with a bystander)


async def test_oversized_frames_get_too_large_then_4008(server, users):
    attacker, bystander_user = await users(2)
    ws = await ws_welcome(server, attacker)
    head = '{"type":"publish","id":"b","channel":"user:0","payload":"'
    boundary = head + "x" * (MAX_FRAME_BYTES - len(head) - 2) + '"}'
    assert len(boundary) == MAX_FRAME_BYTES
    reply = await request(ws, orjson.loads(boundary))
    assert reply["payload"]["code"] == "forbidden"  # exactly the limit is read (and refused for its channel)

    async def attack():
        for _ in range(MAX_INVALID_FRAMES + 1):
            await ws.send("y" * (MAX_FRAME_BYTES + 1))
        return await drain(ws)

    async with Bystander(server, bystander_user) as bystander:
        frames, close = await bystander.during(attack())
        await bystander.assert_served()

    codes = [answer["payload"]["code"] for answer in answers(frames)]
    assert codes == ["too_large"] * (MAX_INVALID_FRAMES + 1)
    assert (close.code, close.reason) == (4008, "too many invalid or oversized messages")
    assert len(events("invalid_frames")) == 1
    # Listed up to the per-source limit of the admin's list (20 a minute), all counted.
    assert len(events("too_large")) == 20
    assert security.counts_for_user(str(attacker.pk))["too_large"] == MAX_INVALID_FRAMES + 1


async def test_a_frame_over_the_servers_max_size_is_closed_1009_and_the_server_survives(server, users):
    attacker, other = await users(2)
    ws = await ws_welcome(server, attacker)

    await ws.send("z" * (17 * 1024 * 1024))  # over uvicorn's --ws-max-size (256 KiB as deployed)
    frames, close = await drain(ws)

    assert answers(frames) == [] and close.code == 1009
    fresh = await ws_welcome(server, other)
    assert await still_open(fresh)
    await fresh.close()


async def test_a_thousand_garbage_frames_get_errors_then_4008(server, users):
    attacker, bystander_user = await users(2)
    ws = await ws_welcome(server, attacker)
    garbage = ["not json", "[1,2]", '{"type": 7}', '{"type": "explode"}', '{"type": "subscribe"}', "\x00" * 10]

    async def attack():
        async def send_all():
            for n in range(1000):
                try:
                    if n % 7 == 0:
                        await ws.send(bytes([n % 256]) * 50)  # a binary frame of garbage
                    else:
                        await ws.send(garbage[n % len(garbage)])
                except websockets.ConnectionClosed:
                    return n
            return 1000

        sent, (frames, close) = await asyncio.gather(send_all(), drain(ws))
        return sent, frames, close

    async with Bystander(server, bystander_user) as bystander:
        sent, frames, close = await bystander.during(attack())
        await bystander.assert_served()

    replies = answers(frames)
    assert {r["type"] for r in replies} == {"error"}
    assert len(replies) == MAX_INVALID_FRAMES + 1  # one error per frame up to the limit, then nothing
    assert {r["payload"]["code"] for r in replies} <= {"invalid_json", "invalid_message", "unknown_command"}
    assert (close.code, close.reason) == (4008, "too many invalid or oversized messages")
    assert len(events("invalid_frames")) >= 1
    survivor = await ws_welcome(server, attacker)  # the server survived and the attacker may come back
    assert await still_open(survivor)
    await survivor.close()


async def test_frames_after_a_policy_close_are_not_handled(connect, users):
    # In-process, so that the frame after the close surely reaches the consumer; over the network it
    # does whenever it arrives before the close handshake ends (pipelined floods: usually).
    (attacker,) = await users(1)
    _, sock, _ = await connect(attacker)
    await leave_broadcast(sock)
    for _ in range(MAX_INVALID_FRAMES + 1):
        await sock.send("garbage")
    outputs = [await sock.communicator.receive_output(2) for _ in range(MAX_INVALID_FRAMES + 2)]
    assert outputs[-1]["type"] == "websocket.close" and outputs[-1]["code"] == 4008

    await sock.send("garbage")  # already past the limit: must be ignored

    assert await sock.nothing()
    assert len(events("invalid_frames")) == 1


async def test_a_command_flood_gets_rate_limited_then_4029(server, users):
    attacker, bystander_user = await users(2)
    ws = await ws_welcome(server, attacker)

    async def attack():
        async def send_all():
            for n in range(1000):
                try:
                    await ws.send(orjson.dumps({"type": "ping", "id": n}).decode())
                except websockets.ConnectionClosed:
                    return

        _, (frames, close) = await asyncio.gather(send_all(), drain(ws))
        return frames, close

    async with Bystander(server, bystander_user) as bystander:
        frames, close = await bystander.during(attack())
        await bystander.assert_served()

    replies = answers(frames)
    pongs = [r for r in replies if r["type"] == "pong"]
    limited = [r for r in replies if r["type"] == "error"]
    assert len(pongs) >= 60  # the burst
    assert {r["payload"]["code"] for r in limited} == {"rate_limited"}
    assert len(limited) >= 49  # then RATE_LIMIT_STRIKES refusals in a row, the last of which closes
    assert len(pongs) + len(limited) < 1000
    assert (close.code, close.reason) == (4029, "rate limited; retry after 30s")
    assert {e["user_id"] for e in events("rate_limited")} == {str(attacker.pk)}


async def test_too_many_connections_for_one_user_get_4003(server, users):
    attacker, bystander_user = await users(2)
    bystander = await ws_welcome(server, bystander_user)
    first = [await ws_welcome(server, attacker) for _ in range(MAX_CONNECTIONS_PER_USER)]

    over = await drain(await ws_open(server, token=access_token_for(attacker)))
    await first[0].close()
    await asyncio.sleep(0.2)
    again = await ws_welcome(server, attacker)  # a slot freed by a close is usable again

    assert over[0] == [] and (over[1].code, over[1].reason) == (4003, "too many connections for this user")
    assert all([await still_open(ws) for ws in first[1:] + [again, bystander]])
    assert [e["user_id"] for e in events("too_many_connections")] == [str(attacker.pk)]
    for ws in first[1:] + [again, bystander]:
        await ws.close()


async def test_a_connect_flood_from_one_ip_gets_4029_and_other_ips_are_served(server, users):
    attacker, bystander_user, newcomer = await users(3)
    if time.time() % 60 > 50:  # the limit counts per wall-clock minute: start the flood inside one window
        await asyncio.sleep(60.2 - time.time() % 60)
    attempts = CONNECTS_PER_IP_PER_MINUTE + 10

    async def attempt(n: int):
        # Half of them claim another client IP: X-Forwarded-For from an untrusted peer must not count.
        headers = {"X-Forwarded-For": f"10.9.{n // 250}.{n % 250}"} if n % 2 else {}
        ws = await ws_open(server, local_addr=(ATTACKER_IP, 0), additional_headers=headers)
        return await drain(ws)

    async def attack():
        results = []
        for start in range(0, attempts, 10):
            results += await asyncio.gather(*(attempt(n) for n in range(start, min(attempts, start + 10))))
        newcomer_ws = await ws_welcome(server, newcomer)  # another IP connects during the flood
        with_token = await drain(await ws_open(server, token=access_token_for(attacker),
                                               local_addr=(ATTACKER_IP, 0)))
        return results, newcomer_ws, with_token

    async with Bystander(server, bystander_user) as bystander:
        results, newcomer_ws, with_token = await bystander.during(attack())
        await bystander.assert_served()

    closes = [close for frames, close in results]
    assert all(frames == [] for frames, _ in results)
    assert sum(c.code == 4001 for c in closes) == CONNECTS_PER_IP_PER_MINUTE
    refused = [c for c in closes if c.code == 4029]
    assert len(refused) == attempts - CONNECTS_PER_IP_PER_MINUTE
    for close in refused + [with_token[1]]:
        assert close.code == 4029
        seconds = int(close.reason.removeprefix("too many connection attempts; retry after ").removesuffix("s"))
        assert 1 <= seconds <= 60
    assert await still_open(newcomer_ws)
    assert [(e["ip"], e["kind"]) for e in events("connect_flood")] == [(ATTACKER_IP, "connect_flood")]
    assert security.counts_for_ip(ATTACKER_IP) == {"auth_failure": CONNECTS_PER_IP_PER_MINUTE, "connect_flood": 1}
    assert security.top_ips()[0] == (ATTACKER_IP, CONNECTS_PER_IP_PER_MINUTE + 1)
    await newcomer_ws.close()
