"""Socket fixtures: in-process communicators on the real ASGI app."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from channels.testing import WebsocketCommunicator

from renum.asgi import application
from tests.conftest import access_token_for


class Socket:
    """A WebsocketCommunicator with JSON helpers and exact waits."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.welcome: dict[str, Any] | None = None

    async def send(self, message: Any) -> None:
        """Send a JSON command (or raw text when given a str)."""
        text = message if isinstance(message, str) else orjson.dumps(message).decode()
        await self.communicator.send_to(text_data=text)

    async def recv(self, timeout: float = 3) -> dict[str, Any]:
        """The next frame, parsed."""
        return orjson.loads(await self.communicator.receive_from(timeout))

    async def recv_until(self, predicate, timeout: float = 3) -> dict[str, Any]:
        """Skip frames until one matches."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - asyncio.get_running_loop().time()))
            if predicate(frame):
                return frame

    async def nothing(self, timeout: float = 0.3) -> bool:
        """True when no frame arrives within the timeout."""
        return await self.communicator.receive_nothing(timeout)

    async def close(self) -> None:
        """Disconnect (always, so the consumer task ends)."""
        await self.communicator.disconnect()


@pytest.fixture
async def connect():
    """``await connect(user, path=..., subprotocols=..., headers=...)`` -> (connected, Socket)."""
    sockets: list[Socket] = []

    async def open_socket(user=None, *, path: str = "/ws/", token: str | None = None,
                          subprotocols: list[str] | None = None, headers: list | None = None,
                          expect_welcome: bool = True):
        if subprotocols is None:
            subprotocols = ["renum.v1"]
            if user is not None or token is not None:
                subprotocols.append("bearer." + (token or access_token_for(user)))
        communicator = WebsocketCommunicator(application, path, headers=headers or [], subprotocols=subprotocols)
        socket = Socket(communicator)
        sockets.append(socket)
        connected, detail = await communicator.connect(timeout=5)
        if connected and expect_welcome:
            socket.welcome = await socket.recv()
            assert socket.welcome["type"] == "welcome"
        return connected, socket, detail

    yield open_socket
    for socket in sockets:
        await socket.close()


@pytest.fixture
def restore_registries():
    """Let a test register channel namespaces and commands without leaking them to others."""
    from realtime import channels, commands

    saved = dict(channels._policies), dict(commands._commands)
    yield
    channels._policies.clear()
    channels._policies.update(saved[0])
    commands._commands.clear()
    commands._commands.update(saved[1])


@pytest.fixture
def live_server_factory(transactional_db):
    """``live_server_factory(**env)`` starts a uvicorn process; all are stopped after the test."""
    from tests.live import LiveServer

    servers: list[LiveServer] = []

    def start(port: int | None = None, **env: str) -> LiveServer:
        server = LiveServer(port, **env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def live_server_proc(live_server_factory):
    """One running server process."""
    return live_server_factory()
