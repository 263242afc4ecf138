"""Real server processes on loopback ports, for integration and failure tests.

The server runs the production ASGI stack (uvicorn) against the test database and the test
Redis, so what the tests create (committed) is what the server sees.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """An unused loopback TCP port, below the kernel's ephemeral range (32768 and up).

    An ephemeral port can be taken by any outgoing connection (to Redis, PostgreSQL) between
    this check and the server's bind, or while a killed server is being restarted on it.
    """
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def test_database_url() -> str:
    """A URL for the database the test run is using (pytest-django's test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def server_env(**overrides: str) -> dict[str, str]:
    """Environment for a child process that shares the test database and Redis."""
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "renum.settings",
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
        "PYTHONUNBUFFERED": "1",
    })
    env.update(overrides)
    return env


class LiveServer:
    """One uvicorn process serving renum.asgi on a loopback port."""

    def __init__(self, port: int | None = None, *, uvicorn_args: tuple[str, ...] = (), **env: str) -> None:
        self.port = port or free_port()
        self.env = env
        self.uvicorn_args = uvicorn_args
        self.process: subprocess.Popen | None = None
        self.log_path = Path(settings.VAR_DIR) / f"live-{self.port}.log"

    @property
    def ws_url(self) -> str:
        """Base WebSocket URL."""
        return f"ws://127.0.0.1:{self.port}/ws/"

    @property
    def http_url(self) -> str:
        """Base HTTP URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> LiveServer:
        """Start the process and wait until the port answers."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "renum.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--ws", "realtime.transports.wsprotocol:WebSocketProtocol",
             "--ws-max-size", "262144",
             "--lifespan", "off",
             "--log-level", "warning", "--timeout-graceful-shutdown", "5", *self.uvicorn_args],
            cwd=ROOT, env=server_env(**self.env), stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early; see {self.log_path}:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not listen on {self.port} within {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """Stop the process with a signal (SIGKILL for a crash) and return its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
