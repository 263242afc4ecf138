"""The servers under test, as child processes on free loopback ports.

``ours`` is the project's ASGI application (uvicorn with a chosen WebSocket implementation,
or daphne); ``bare`` and ``textbook`` are the reference servers of this package. Each is one
process, so its CPU time and memory can be read from /proc.

Socket.IO (clients on ``/socket.io/``, the ``sio`` client protocol): ``ours-sio`` is the same
application as ``ours``; ``node-sio`` is the Node.js ``socket.io`` server of
``reference_node/`` (its packages installed there with ``npm ci`` on first use), ``pysio``
python-socketio's ASGI server (``reference_pysio``) under uvicorn.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from loadtest import procstat

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
# ``renum`` is the project's own protocol class (uvicorn's websockets-sansio holding less per
# socket, ``realtime.transports.wsprotocol``), the one ``scripts/serve.sh`` serves with.
UVICORN_WS = ("renum", "websockets-sansio", "wsproto", "websockets")
WS_CLASSES = {"renum": "realtime.transports.wsprotocol:WebSocketProtocol"}
# Where the project's protocol class was before realtime/ was laid out by layer: an A/B run
# against an older commit (``ours@<commit>``) serves that commit with its own class.
WS_CLASS_FILES = {"realtime/transports/wsprotocol.py": "realtime.transports.wsprotocol:WebSocketProtocol",
                  "realtime/wsprotocol.py": "realtime.wsprotocol:WebSocketProtocol"}
BACKLOG = 4096


DEFAULT_GC = "defaultgc"
SIO_KINDS = ("ours-sio", "node-sio", "pysio")  # servers the clients reach with Engine.IO / Socket.IO
NODE_DIR = ROOT / "loadtest" / "reference_node"


@dataclass(frozen=True)
class ServerSpec:
    """Which server and how it is served: ``ours``, ``ours:daphne``, ``ours:wsproto``, ``bare``,
    ``bare:defaultgc`` (CPython's collector defaults instead of the tuning ours has), ``textbook``."""

    kind: str  # ours | bare | textbook | ours-sio | node-sio | pysio
    runner: str  # uvicorn | daphne | websockets
    ws: str = ""  # uvicorn's --ws implementation
    app: str = ""  # ours only: another ASGI app (``module:attribute``), for A/B runs in one table
    commit: str = ""  # ours only: the project's files at another commit, for A/B runs in one table

    @property
    def label(self) -> str:
        """Short name used as a column header."""
        if self.kind == "bare":
            return "bare (CPython GC defaults)" if self.ws == DEFAULT_GC else "bare"
        if self.kind == "node-sio":
            return "node-sio (socket.io)"
        detail = self.runner if self.runner == "daphne" else f"{self.runner} {self.ws}"
        return (f"{self.kind} ({detail})" + (f" [{self.app}]" if self.app else "")
                + (f" at {self.commit}" if self.commit else ""))

    @classmethod
    def parse(cls, name: str, server_cmd: str = "uvicorn", ws: str = "renum") -> ServerSpec:
        """Parse a ``--servers`` item; ``ours`` alone follows ``--server-cmd`` and ``--ws``;
        ``ours...@module:attribute`` serves another ASGI app (an A/B variant), ``ours...@<commit>``
        the project as it was at a commit (the base of a change, in the same table)."""
        name, _, variant = name.strip().partition("@")
        app = variant if ":" in variant else ""
        commit = short_commit(variant) if variant and not app else ""
        if variant and (not name.startswith("ours") or not (app or commit)):
            raise ValueError(f"@{variant}: only ours takes another app, given as module:attribute, or a commit")
        spec = cls._parse(name, server_cmd, ws)
        return cls(spec.kind, spec.runner, spec.ws, app, commit) if variant else spec

    @classmethod
    def _parse(cls, name: str, server_cmd: str, ws: str) -> ServerSpec:
        kind, _, variant = name.partition(":")
        if kind == "bare":
            if variant not in ("", DEFAULT_GC):
                raise ValueError(f"unknown variant {variant!r} of bare: only {DEFAULT_GC}")
            return cls("bare", "websockets", variant)
        if kind == "node-sio":
            if variant:
                raise ValueError(f"node-sio has no variants, not {variant!r}")
            return cls("node-sio", "node")
        if kind not in ("ours", "textbook", "ours-sio", "pysio"):
            raise ValueError(f"unknown server {name!r}: use ours[:daphne|:<uvicorn ws>], bare, textbook, "
                             "ours-sio[:...], node-sio or pysio[:<uvicorn ws>]")
        variant = variant or (server_cmd if server_cmd == "daphne" else ws)
        if kind == "textbook" and variant == "renum":  # the textbook setup is served as uvicorn ships
            variant = "websockets-sansio"
        if variant == "daphne":
            return cls(kind, "daphne")
        if variant == "uvicorn":
            variant = ws
        if variant not in UVICORN_WS:
            raise ValueError(f"unknown variant {variant!r} of {kind}: daphne or one of {', '.join(UVICORN_WS)}")
        return cls(kind, "uvicorn", variant)


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _preexec() -> None:
    procstat.raise_nofile()


class ServerProcess:
    """One server process on a loopback port: start, wait until it listens, read /proc, stop."""

    def __init__(self, spec: ServerSpec, env: dict[str, str], log_dir: Path,
                 ours_app: str = "renum.asgi:application") -> None:
        self.spec = spec
        self.ours_app = ours_app
        self.env = env
        self.port = free_port()
        self.log_path = log_dir / f"{spec.label.replace(' ', '_').replace('(', '').replace(')', '')}-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.cwd = ROOT  # another commit's files (``ServerSpec.commit``), unpacked by ``start``

    @property
    def url(self) -> str:
        """The WebSocket endpoint (Engine.IO's WebSocket transport for the Socket.IO servers)."""
        if self.spec.kind in SIO_KINDS:
            return f"ws://{LOOPBACK}:{self.port}/socket.io/?EIO=4&transport=websocket"
        return f"ws://{LOOPBACK}:{self.port}/ws/"

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        """The command line of the server process."""
        spec, port = self.spec, str(self.port)
        if spec.kind == "bare":
            return [sys.executable, "-m", "loadtest.reference_bare", "--host", LOOPBACK, "--port", port,
                    "--backlog", str(BACKLOG), "--prefix", self.env.get("LOADTEST_LAYER_PREFIX", "lt") + ":bare:"]
        if spec.kind == "node-sio":
            return [node_executable(), str(NODE_DIR / "server.js"), "--host", LOOPBACK, "--port", port,
                    "--backlog", str(BACKLOG), "--key", sio_key(self.env)]
        app = {"ours": spec.app or self.ours_app, "ours-sio": spec.app or self.ours_app,
               "pysio": "loadtest.reference_pysio:application"}.get(spec.kind,
                                                                    "loadtest.reference_textbook:application")
        if spec.runner == "daphne":
            return [sys.executable, "-m", "daphne", "-v", "0",
                    "-e", f"tcp:port={port}:interface={LOOPBACK}:backlog={BACKLOG}", app]
        return [sys.executable, "-m", "uvicorn", app, "--host", LOOPBACK, "--port", port,
                "--loop", "uvloop", "--http", "httptools", "--ws", ws_class(spec.ws, self.cwd),
                "--lifespan", "off",
                "--log-level", "warning", "--no-access-log", "--backlog", str(BACKLOG),
                "--timeout-graceful-shutdown", "3"]

    def start(self, timeout: float = 30) -> ServerProcess:
        """Start the process and wait until the port accepts connections."""
        if self.spec.kind == "node-sio":
            ensure_node_reference()
        if self.spec.commit:
            self.cwd = source_at(self.spec.commit, self.log_path.parent)
            others = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
            self.env = {**self.env, "PYTHONPATH": os.pathsep.join([str(self.cwd), *others])}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, preexec_fn=_preexec)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.label} exited early; log {self.log_path}:\n{self.log_tail()}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.spec.label} did not listen on {self.port} within {timeout}s")

    def log_tail(self, size: int = 3000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time the server has used."""
        return procstat.cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        """The server's resident memory."""
        return procstat.rss_bytes(self.pid)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)


def ws_class(ws: str, source: Path) -> str:
    """uvicorn's ``--ws`` for ``ws`` in the project's files at ``source``: ``renum`` names the
    project's protocol class wherever that checkout keeps it, other names are uvicorn's own."""
    if ws not in WS_CLASSES:
        return ws
    for path, dotted in WS_CLASS_FILES.items():
        if (source / path).exists():
            return dotted
    raise FileNotFoundError(f"no protocol class of the project under {source}: serve it with --ws websockets-sansio")


def short_commit(revision: str) -> str:
    """The abbreviated hash of a git revision of this project; "" when it names no commit."""
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "--short=7", revision + "^{commit}"],
                          cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def source_at(commit: str, log_dir: Path) -> Path:
    """This project's files at a commit (``git archive``), unpacked once under the log directory."""
    sha = subprocess.run(["git", "rev-parse", "--verify", commit + "^{commit}"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    target = log_dir / f"src-{sha[:12]}"
    if not (target / "manage.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=ROOT, capture_output=True, check=True)
        tar_path = target.with_suffix(".tar")
        tar_path.write_bytes(archive.stdout)
        with tarfile.open(tar_path) as tar:
            tar.extractall(target, filter="data")
        tar_path.unlink()
    return target


def node_executable() -> str:
    """The ``node`` on PATH (the Node.js reference server and its publisher need Node.js 20+)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node-sio needs Node.js 20 or later on PATH")
    return node


def ensure_node_reference(timeout: float = 600) -> Path:
    """Install the Node.js reference's pinned packages (``npm ci`` in its directory) when they are
    missing or were installed from another package-lock.json (a stamp in node_modules says which)."""
    node_executable()
    stamp = NODE_DIR / "node_modules" / ".renum-lock.sha"
    want = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    installed = stamp.read_text().strip() if stamp.exists() else ""
    if installed != want or not (NODE_DIR / "node_modules" / "socket.io").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("node-sio needs npm to install its packages (loadtest/reference_node)")
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"npm ci in loadtest/reference_node failed:\n{done.stderr[-2000:]}")
        stamp.write_text(want + "\n")
    return NODE_DIR


def sio_key(env: dict[str, str]) -> str:
    """The pub/sub name prefix of the Socket.IO reference servers (per run, as the layers' prefix)."""
    return env.get("LOADTEST_LAYER_PREFIX", "lt") + ":sio"


def server_env(spec: ServerSpec, base: dict[str, str], *, database_url: str, redis_url: str, secret_key: str,
               layer_prefix: str, ours_settings: str = "renum.settings") -> dict[str, str]:
    """Environment of a server (and of the publisher that feeds it)."""
    env = dict(base)
    env.update({
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secret_key,
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        # Every client comes from 127.0.0.1: limits high enough for the run, but still checked.
        "REALTIME_CONNECTS_PER_IP_PER_MINUTE": "100000000",
        "REALTIME_MAX_CONNECTIONS_PER_USER": "100000",
        "LOADTEST_LAYER_PREFIX": layer_prefix,
        # Per run: pub/sub names are global to a Redis server, whatever the database number, so
        # anyone else's publications on the default prefix would reach the measured server.
        "REALTIME_KEY_PREFIX": f"{layer_prefix}:rt" if layer_prefix else base.get("REALTIME_KEY_PREFIX", "renum:rt"),
        "DJANGO_SETTINGS_MODULE": "loadtest.textbook_settings" if spec.kind == "textbook" else ours_settings,
    })
    if spec.kind == "bare" and spec.ws == DEFAULT_GC:
        env["REALTIME_GC_THRESHOLDS"] = "off"
    if spec.kind == "pysio":
        env["PYSIO_CHANNEL"] = sio_key(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH", "")) if p)
    return env
