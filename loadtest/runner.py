"""The orchestrator: provision, start each server, connect, publish, drain, measure, stop.

One run = one scenario against one or more servers with the same clients (users, tokens,
worker processes) and the same publisher semantics. Everything it starts (servers, the
publisher, py-spy, client workers) is stopped at the end with bounded waits.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from array import array
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loadtest import procstat, redisstats
from loadtest.clients import C_CONNECTED, C_DELIVERED, C_DROPPED, C_ERRORS, WorkerPool
from loadtest.provision import ensure_database, mint_tokens, provision_users
from loadtest.report import Result, median_run
from loadtest.scenarios import SCENARIOS, Scenario
from loadtest.servers import NODE_DIR, ROOT, SIO_KINDS, ServerProcess, ServerSpec, node_executable, server_env, sio_key

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/loadtest"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"


@dataclass
class LoadConfig:
    """Options of a run (the management command's arguments)."""

    scenario: str
    secret_key: str
    clients: int | None = None
    rate: float | None = None
    duration: float | None = None
    servers: list[str] = field(default_factory=lambda: ["ours", "bare", "textbook"])
    server_cmd: str = "uvicorn"
    ws: str = "renum"
    workers: int = 2
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    connect_concurrency: int = 500
    connect_attempts: int = 20
    open_timeout: float = 30.0
    drain_timeout: float | None = None
    publisher_threads: int | None = None
    compression: bool = False
    profile_dir: Path | None = None
    log_dir: Path = ROOT / "var" / "loadtest"
    progress: bool = True
    user_prefix: str = "loadtest-"
    migrate: bool = True
    token_lifetime_s: int = 4 * 3600
    settle_s: float = 2.0
    base_env: dict[str, str] | None = None
    ours_settings: str = "renum.settings"
    ours_app: str = "renum.asgi:application"
    repeat: int = 1
    redis_stats: bool = False  # count Redis commands per phase (a Redis of the run's own only)
    client_protocol: str = "v1"  # or "socketio": ``ours`` runs as ``ours-sio`` (clients on /socket.io/)

    def resolved(self) -> tuple[Scenario, int, float, float]:
        """The scenario and its effective clients, rate and duration."""
        scenario = SCENARIOS[self.scenario]
        return (scenario, self.clients or scenario.clients,
                scenario.rate if self.rate is None else self.rate,
                scenario.duration if self.duration is None else self.duration)


class Progress:
    """Live progress on stderr: phase, connected x/N, delivered y/expected."""

    def __init__(self, pool: WorkerPool, clients: int, enabled: bool) -> None:
        self.pool = pool
        self.clients = clients
        self.enabled = enabled
        self.phase = "starting"
        self.expected: int | None = None
        self._stop = threading.Event()
        self._tty = sys.stderr.isatty()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if enabled:
            self._thread.start()

    def line(self) -> str:
        """The current status line."""
        pool = self.pool
        delivered = pool.total(C_DELIVERED)
        expected = "?" if self.expected is None else str(self.expected)
        return (f"{self.phase}: connected {pool.total(C_CONNECTED)}/{self.clients}, "
                f"connect errors {pool.total(C_ERRORS)}, delivered {delivered}/{expected}, "
                f"dropped {pool.total(C_DROPPED)}")

    def _run(self) -> None:
        interval = 0.5 if self._tty else 5.0
        while not self._stop.wait(interval):
            if self._tty:
                sys.stderr.write("\r\033[K" + self.line())
            else:
                sys.stderr.write(self.line() + "\n")
            sys.stderr.flush()

    def say(self, text: str) -> None:
        """A permanent line."""
        if self.enabled:
            sys.stderr.write(("\r\033[K" if self._tty else "") + text + "\n")
            sys.stderr.flush()

    def stop(self) -> None:
        """End the display."""
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=2)
            if self._tty:
                sys.stderr.write("\r\033[K")


def _warm_up(url: str, token: str, sio: bool = False) -> None:
    """One connect before measuring, so lazily created state (hub, pools, imports) is not counted."""
    from websockets.sync.client import connect

    for attempt in range(20):
        try:
            with connect(url, subprotocols=None if sio else ["renum.v1", "bearer." + token], compression=None,
                         open_timeout=10, close_timeout=2, proxy=None) as ws:
                ws.recv(timeout=10)
                if sio:  # Engine.IO OPEN received; Socket.IO CONNECT, until its answer
                    ws.send("40" + json.dumps({"token": token}))
                    while not ws.recv(timeout=10).startswith(("40", "44")):
                        pass
                return
        except Exception:
            if attempt == 19:
                raise
            time.sleep(0.25)


class Publisher:
    """The publisher child process."""

    def __init__(self, env: dict[str, str], config: dict[str, Any], node: bool = False) -> None:
        # node: the Node.js reference's publisher (socket.io's Redis emitter), same contract
        command = ([node_executable(), str(NODE_DIR / "publisher.js")] if node
                   else [sys.executable, "-m", "loadtest.publisher"])
        self.process = subprocess.Popen([*command, json.dumps(config)], cwd=ROOT,
                                        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"the publisher said nothing within {timeout:.0f}s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the publisher exited (code {self.process.wait(5)})")
        return line.strip()

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until the publisher is set up."""
        if self._line(timeout) != "ready":
            raise RuntimeError("the publisher did not get ready")

    def go(self) -> None:
        """Start publishing."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        """The publisher's report."""
        return json.loads(self._line(timeout))

    def stop(self, grace_s: float = 10.0) -> None:
        """Make sure the process is gone: it exits by itself once it has reported (its exit
        handlers finish the relay's work), and is killed only when it does not."""
        try:
            self.process.stdin.close()
            self.process.wait(grace_s)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(5)


class Profiler:
    """py-spy recording the server over a window (when py-spy is installed); stopped with SIGINT."""

    def __init__(self, pid: int, output: Path) -> None:
        self.output = output
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        output.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--duration", "3600", "--rate", "200", "--nonblocking",
             "--format", "raw", "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    @classmethod
    def maybe(cls, config: LoadConfig, pid: int, name: str) -> Profiler | None:
        """A profiler when ``--profile`` was given and py-spy can be found."""
        if config.profile_dir is None:
            return None
        if not (shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists()):
            return None
        return cls(pid, config.profile_dir / f"{config.scenario}-{name}.txt")

    def stop(self, timeout: float = 30) -> None:
        """End the recording; py-spy writes the file on SIGINT (bounded wait, then kill)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _targets(scenario: Scenario, spec: ServerSpec, user_ids: list[int]) -> list[Any]:
    if scenario.publish == "broadcast":
        return ["broadcast"]
    if scenario.publish == "notify":
        return user_ids
    if spec.kind == "textbook":
        return [f"user.{uid}" for uid in user_ids]
    return [f"user:{uid}" for uid in user_ids]


def run_server(config: LoadConfig, spec: ServerSpec, pool: WorkerPool, progress: Progress,
               warm_token: str) -> Result:
    """Measure one server on the run's scenario."""
    scenario, clients, rate, duration = config.resolved()
    layer_prefix = f"lt{os.getpid()}x{int(time.time())}"
    env = server_env(spec, config.base_env or dict(os.environ), database_url=config.database_url,
                     redis_url=config.redis_url, secret_key=config.secret_key, layer_prefix=layer_prefix,
                     ours_settings=config.ours_settings)
    label = spec.label
    if spec.kind in ("ours", "ours-sio"):
        changes = []
        if config.ours_settings != "renum.settings":
            changes.append(config.ours_settings.rsplit(".", 1)[-1])
        if config.ours_app != "renum.asgi:application":
            module, _, app = config.ours_app.partition(":")
            changes.append(module.rsplit(".", 1)[-1] + ("" if app == "application" else f":{app}"))
        label += f" [{' + '.join(changes)}]" if changes else ""
    result = Result(server=label, kind=spec.kind, scenario=scenario.name, clients=clients)
    progress.phase, progress.expected = f"{spec.label}: starting", None
    server = ServerProcess(spec, env, config.log_dir, config.ours_app).start()
    try:
        _warm_up(server.url, warm_token, sio=spec.kind in SIO_KINDS)
        time.sleep(0.5)
        result.load_before = procstat.load_average()
        result.rss_before = server.rss_bytes()
        progress.phase = f"{spec.label}: connecting"
        profiler = Profiler.maybe(config, server.pid, _file_name(label)) if not scenario.publish else None
        connect_cpu_before = server.cpu_seconds()
        redis_before = redisstats.snapshot(config.redis_url) if config.redis_stats else None
        try:
            replies = pool.call("connect", {
                "url": server.url, "concurrency": max(1, config.connect_concurrency // len(pool.pipes)),
                "attempts": config.connect_attempts, "open_timeout": config.open_timeout,
                "compression": config.compression, "protocol": "socketio" if spec.kind in SIO_KINDS else "v1",
            }, timeout=max(120.0, clients * 0.1))
        finally:
            if profiler is not None:
                profiler.stop()
        result.connect_cpu_s = server.cpu_seconds() - connect_cpu_before
        if redis_before is not None:
            result.redis_connect = redisstats.delta(redis_before, redisstats.snapshot(config.redis_url))
        result.connected = sum(r["ok"] for r in replies)
        result.connect_s = max(r["finished"] for r in replies) - min(r["started"] for r in replies)
        durations = sorted(d for r in replies for d in r["durations"])
        result.connect_p99_s = durations[min(len(durations) - 1, int(len(durations) * 0.99))] if durations else 0
        for reply in replies:
            for kind, count in reply["errors"].items():
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + count
        result.connect_errors = sum(result.error_kinds.values())
        progress.phase = f"{spec.label}: idle"
        time.sleep(config.settle_s)
        result.rss_idle = server.rss_bytes()
        if scenario.publish and result.connected:
            _publish_and_measure(config, spec, label, env, server, pool, progress, result, rate, duration,
                                 connected_users=[u for r in replies for u in r.get("users", [])])
        if not server.alive():
            result.note = f"the server died; see {server.log_path}"
        progress.phase = f"{spec.label}: disconnecting"
        pool.call("disconnect", timeout=60)
    finally:
        server.stop()
        _forget_layer_keys(config.redis_url, layer_prefix)
    progress.say(f"{spec.label}: done")
    return result


def _file_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip("_")


def _publish_and_measure(config: LoadConfig, spec: ServerSpec, label: str, env: dict[str, str],
                         server: ServerProcess,
                         pool: WorkerPool, progress: Progress, result: Result, rate: float, duration: float,
                         connected_users: list[int]) -> None:
    scenario = SCENARIOS[config.scenario]
    threads = config.publisher_threads or (4 if scenario.publish == "notify" else 1)
    run_id = "lt" + secrets.token_hex(8)
    # ours-sio is published to as ours is (the binding delivers what the session core receives)
    mode = "notify" if scenario.publish == "notify" else {"ours-sio": "ours"}.get(spec.kind, spec.kind)
    # Each publishing thread keeps a database connection, and the process's outbox relay needs one.
    env = {**env, "DATABASE_POOL_MAX_SIZE": str(max(int(env.get("DATABASE_POOL_MAX_SIZE", "8")), threads + 2))}
    publisher = Publisher(env, {
        "mode": mode, "targets": _targets(scenario, spec, connected_users), "rate": rate, "duration": duration,
        "threads": threads, "redis_url": config.redis_url, "bare_prefix": env["LOADTEST_LAYER_PREFIX"] + ":bare:",
        "run": run_id, "key": sio_key(env),
    }, node=spec.kind == "node-sio")
    profiler = publisher_profiler = None
    try:
        publisher.wait_ready()
        pool.call("reset", {"run": run_id})
        profiler = Profiler.maybe(config, server.pid, _file_name(label))
        publisher_profiler = Profiler.maybe(config, publisher.process.pid, "publisher-" + _file_name(label))
        progress.phase = f"{spec.label}: publishing"
        progress.expected = int(rate * duration) * (result.connected if scenario.publish == "broadcast" else 1)
        redis_before = redisstats.snapshot(config.redis_url) if config.redis_stats else None
        cpu_before, started = server.cpu_seconds(), time.monotonic()
        publisher.go()
        report = publisher.result(timeout=duration * 3 + 60)
        if publisher_profiler is not None:
            publisher_profiler.stop()
        result.published, result.publish_failed = report["published"], report["failed"]
        result.rate_target, result.rate_achieved = rate, report["rate_achieved"]
        result.publisher_cpu_s, result.publisher_elapsed_s = report.get("cpu_s", 0.0), report["elapsed"]
        per_message = result.connected if scenario.publish == "broadcast" else 1
        result.expected = result.published * per_message
        progress.expected = result.expected
        progress.phase = f"{spec.label}: draining"
        finished = _drain(pool, result.expected, config.drain_timeout or max(10.0, duration))
        result.cpu_s = server.cpu_seconds() - cpu_before
        if redis_before is not None:
            result.redis_publish = redisstats.delta(redis_before, redisstats.snapshot(config.redis_url))
        if profiler is not None:
            profiler.stop()
        result.window_s = finished - started
        collected = pool.call("collect", timeout=60)
        latencies: list[float] = []
        for reply in collected:
            values = array("d")
            values.frombytes(reply["latencies"])
            latencies.extend(v * 1000 for v in values)
            for code, count in reply["close_codes"].items():
                result.close_codes[code] = result.close_codes.get(code, 0) + count
        latencies.sort()
        result.latencies_ms = latencies
        result.delivered = len(latencies)
        result.dropped_connections = pool.total(C_DROPPED)
    finally:
        for recording in (profiler, publisher_profiler):
            if recording is not None:
                recording.stop()
        publisher.stop()


def _drain(pool: WorkerPool, expected: int, timeout: float, idle_s: float = 5.0) -> float:
    """Wait until everything arrived, nothing arrived for ``idle_s``, or ``timeout``; returns the end time."""
    deadline = time.monotonic() + timeout
    last, last_change = pool.total(C_DELIVERED), time.monotonic()
    while time.monotonic() < deadline:
        delivered = pool.total(C_DELIVERED)
        now = time.monotonic()
        if delivered >= expected:
            return now
        if delivered != last:
            last, last_change = delivered, now
        elif now - last_change > idle_s:
            return last_change
        time.sleep(0.02)
    return time.monotonic()


def _forget_layer_keys(redis_url: str, prefix: str) -> None:
    """Delete this run's keys (the textbook layer's groups and inboxes, ours' streams and registry)."""
    try:
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    except Exception:
        pass


def run(config: LoadConfig) -> list[Result]:
    """Run a scenario against every requested server; returns one Result per server."""
    scenario, clients, rate, duration = config.resolved()
    if config.repeat < 1:
        raise ValueError(f"--repeat must be at least 1, not {config.repeat}")
    specs = [ServerSpec.parse(name, config.server_cmd, config.ws) for name in config.servers]
    if config.client_protocol == "socketio":  # ``ours`` with Socket.IO clients is ``ours-sio``
        specs = [replace(s, kind="ours-sio") if s.kind == "ours" else s for s in specs]
    skipped = [s.label for s in specs if s.kind not in scenario.servers]
    specs = [s for s in specs if s.kind in scenario.servers]
    procstat.raise_nofile()
    ensure_database(config.database_url)
    base = config.base_env or dict(os.environ)
    provisioning_env = server_env(ServerSpec("ours", "uvicorn", config.ws), base, database_url=config.database_url,
                                  redis_url=config.redis_url, secret_key=config.secret_key, layer_prefix="",
                                  ours_settings=config.ours_settings)
    user_ids = provision_users(provisioning_env, clients + 1, config.user_prefix, config.migrate)
    tokens = mint_tokens(user_ids, config.token_lifetime_s)
    pool = WorkerPool(config.workers, list(zip(user_ids[1:], tokens[1:], strict=True)))
    progress = Progress(pool, clients, config.progress)
    if skipped:
        progress.say(f"{scenario.name} runs on {', '.join(scenario.servers)} only; skipped {', '.join(skipped)}")
    runs: list[list[Result]] = [[] for _ in specs]
    try:
        # Repeats go round the servers in turn, so that a slow spell of the machine falls on
        # all of them rather than on one, starting one server later each turn, so that no
        # server always follows the same one (a run right after a long one is slower).
        for turn in range(config.repeat):
            for index in [(turn + i) % len(specs) for i in range(len(specs))]:
                spec = specs[index]
                if config.repeat > 1:
                    progress.say(f"run {turn + 1} of {config.repeat}: {spec.label}")
                runs[index].append(run_server(config, spec, pool, progress, tokens[0]))
    finally:
        progress.stop()
        pool.close()
    return [median_run(server_runs) for server_runs in runs]
