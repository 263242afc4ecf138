"""The official socket.io-client (npm, run by node) against a live server process.

Each test drives ``sio_driver.mjs`` line by line: what the client sees comes back as JSON lines.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal

import pytest
from asgiref.sync import sync_to_async

from executions.models import Team, TeamMembership
from notifications.services import notification_create
from realtime.publish import publish_rollback_unsafe
from realtime.storage import redis as rt_redis
from realtime.storage import streams
from tests.conftest import access_token_for
from tests.live import ROOT, LiveServer

NODE_READY = shutil.which("node") is not None and (ROOT / "node_modules" / "socket.io-client").exists()
pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(not NODE_READY, reason="needs node and the npm workspace (scripts/bootstrap_node.sh)")]

@pytest.fixture(autouse=True)
def _close_thread_connections(close_thread_connections):
    """Database work from asgiref's thread: its connections are closed after each test."""


DRIVER = ROOT / "tests" / "realtime" / "socketio" / "sio_driver.mjs"


class Client:
    """One socket.io-client in a node process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[dict] = []

    @classmethod
    async def start(cls) -> Client:
        process = await asyncio.create_subprocess_exec("node", str(DRIVER), cwd=ROOT, stdin=asyncio.subprocess.PIPE,
                                                       stdout=asyncio.subprocess.PIPE)
        return cls(process)

    async def send(self, **command) -> None:
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()

    async def connect(self, server: LiveServer, **options) -> None:
        await self.send(op="connect", url=server.http_url, options=options)

    async def next(self, predicate, timeout: float = 10) -> dict:
        """The next line that ``predicate`` accepts (earlier ones are kept in ``seen``)."""
        async def read() -> dict:
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise EOFError("the node client exited")
                item = json.loads(line)
                self.seen.append(item)
                if predicate(item):
                    return item
        return await asyncio.wait_for(read(), timeout)

    async def emit(self, event: str, arg) -> dict:
        await self.send(op="emit", event=event, arg=arg)
        return (await self.next(lambda i: "ack" in i and i["ack"]["event"] == event))["ack"]["value"]

    async def close(self) -> None:
        if self.process.returncode is None:
            try:
                await self.send(op="close")
                await asyncio.wait_for(self.process.wait(), 5)
            except (TimeoutError, ConnectionError):
                self.process.kill()
                await self.process.wait()


def events(client: Client, name: str) -> list[list]:
    return [item["args"] for item in client.seen if item.get("event") == name]


@pytest.fixture
async def client():
    node = await Client.start()
    yield node
    await node.close()


def is_connect(item: dict) -> bool:
    return "connect" in item


async def test_connects_with_a_token_and_gets_the_welcome(live_server_proc, user, client):
    await client.connect(live_server_proc, auth={"token": access_token_for(user)}, transports=["websocket"])

    connected = await client.next(is_connect)
    welcome = await client.next(lambda i: i.get("event") == "welcome")

    assert connected["connect"]["recovered"] is False
    payload = welcome["args"][0]
    assert payload["user_id"] == str(user.pk)
    assert set(payload["channels"]) == {f"user:{user.pk}", "broadcast"}
    assert isinstance(welcome["args"][1], str)  # the recovery offset


async def test_a_refused_token_is_a_connect_error_with_code_4001(live_server_proc, client):
    await client.connect(live_server_proc, auth={"token": "not-a-token"}, transports=["websocket"])

    refused = await client.next(lambda i: "connect_error" in i)

    assert refused["connect_error"]["data"] == {"code": 4001}
    assert refused["connect_error"]["message"].startswith("invalid token")


async def test_a_notification_created_by_the_service_arrives_as_an_event(live_server_proc, user, client):
    await client.connect(live_server_proc, auth={"token": access_token_for(user)})
    await client.next(lambda i: i.get("event") == "welcome")

    notification = await sync_to_async(notification_create)(user=user, type="info", title="Hi", message="there")

    event = await client.next(lambda i: i.get("event") == "notification")
    envelope = event["args"][0]
    assert envelope["channel"] == f"user:{user.pk}"
    assert envelope["payload"]["id"] == str(notification.id)
    assert envelope["payload"]["title"] == "Hi"


async def test_subscribe_to_a_team_channel_and_run_a_command_with_acks(live_server_proc, user, client):
    team = await sync_to_async(Team.objects.create)(name="T", slug="t-sio")
    await sync_to_async(TeamMembership.objects.create)(team=team, user=user)
    await client.connect(live_server_proc, auth={"token": access_token_for(user)}, transports=["websocket"])
    await client.next(is_connect)

    subscribed = await client.emit("subscribe", {"channel": f"team:{team.pk}"})
    refused = await client.emit("subscribe", {"channel": "team:999999"})
    result = await client.emit("command", {"name": "notification.mark_all_read", "args": {}})

    assert subscribed["channel"] == f"team:{team.pk}" and subscribed["recovered"] is False
    assert isinstance(subscribed["epoch"], str) and subscribed["offset"] == 0
    assert refused["error"]["code"] in ("forbidden", "not_found")
    assert set(result) == {"result"}


async def test_recovers_every_missed_message_once_after_a_server_restart(live_server_factory, user, client):
    team = await sync_to_async(Team.objects.create)(name="T", slug="t-sio-restart")
    await sync_to_async(TeamMembership.objects.create)(team=team, user=user)
    server = live_server_factory()
    await client.connect(server, auth={"token": access_token_for(user)}, transports=["websocket"])
    await client.next(lambda i: i.get("event") == "welcome")
    await client.emit("subscribe", {"channel": f"team:{team.pk}"})  # acked; no event on it yet
    before = await sync_to_async(notification_create)(user=user, type="info", title="before", message="m")
    await client.next(lambda i: i.get("event") == "notification")

    server.stop(signal.SIGKILL)
    await client.next(lambda i: "disconnect" in i)
    missed = [await sync_to_async(notification_create)(user=user, type="info", title=f"missed {n}", message="m")
              for n in range(3)]
    for n in range(2):
        await sync_to_async(publish_rollback_unsafe)(f"team:{team.pk}", "team_note", {"n": n})
    server.start()

    reconnected = await client.next(is_connect, timeout=20)
    assert reconnected["connect"]["recovered"] is True
    for _ in range(len(missed) + 2):
        await client.next(lambda i: i.get("event") in ("notification", "team_note"))
    await asyncio.sleep(0.5)  # nothing more comes
    ids = [args[0]["payload"]["id"] for args in events(client, "notification")]
    assert ids == [str(before.id)] + [str(n.id) for n in missed]
    assert [args[0]["payload"] for args in events(client, "team_note")] == [{"n": 0}, {"n": 1}]
    assert events(client, "resync") == []


async def test_reconnect_after_the_history_was_lost_is_not_recovered_and_resyncs(live_server_factory, user, client):
    server = live_server_factory()
    await client.connect(server, auth={"token": access_token_for(user)}, transports=["websocket"])
    await client.next(lambda i: i.get("event") == "welcome")
    await sync_to_async(notification_create)(user=user, type="info", title="before", message="m")
    await client.next(lambda i: i.get("event") == "notification")

    server.stop(signal.SIGKILL)
    channel = f"user:{user.pk}"
    rt_redis.sync_client().delete(streams.meta_key(channel), streams.history_key(channel))
    server.start()

    reconnected = await client.next(is_connect, timeout=20)
    resync = await client.next(lambda i: i.get("event") == "resync")
    assert reconnected["connect"]["recovered"] is False
    assert resync["args"][0]["channel"] == channel


async def test_upgrades_from_polling_to_websocket(live_server_proc, user, client):
    await client.connect(live_server_proc, auth={"token": access_token_for(user)})
    await client.next(is_connect)
    if not any("upgrade" in item for item in client.seen):  # may come before or after the connect
        await client.next(lambda i: "upgrade" in i)
    assert [item["upgrade"] for item in client.seen if "upgrade" in item][0] == "websocket"

    result = await client.emit("command", {"name": "notification.mark_all_read", "args": {}})
    assert set(result) == {"result"}
