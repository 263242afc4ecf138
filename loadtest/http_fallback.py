"""The HTTP fallback scenarios: ``longpoll``, ``sse`` and ``events`` (the v1 endpoint).

N clients each follow ``user:<id>``, ``broadcast`` and their team's ``team:<id>`` over HTTP
while notifications are created at a fixed rate (``notification_create``: a PostgreSQL row,
then publish on commit), round robin over the clients. Measured per server:

- lost and duplicated notifications (by the publisher's sequence number);
- create -> response latency (the publisher's ``time.time()`` in the payload vs arrival);
- server RSS per waiting client (RSS once every client waits, minus RSS before any);
- the most PostgreSQL connections the server held (``pg_stat_activity`` rows with the
  ``application_name`` the server process gets through ``PGAPPNAME``, sampled every 100 ms);
- ``GET /api/notifications/unread-count/`` from another client at 10/s: p99 and errors.

A server is ``ours`` (this tree) or ``ours@<commit>``: the project at another commit (its
files from ``git archive``, run with this tree's virtualenv), for the A/B against the sync
long poll that ``GET /api/realtime/events/`` was before.
"""

from __future__ import annotations

import asyncio
import http.client
import multiprocessing
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest import procstat
from loadtest.http_clients import CLIENTS, Stats
from loadtest.provision import ensure_database, mint_tokens, provision_teams, provision_users
from loadtest.servers import LOOPBACK, ROOT, ServerProcess, ServerSpec, server_env, source_at

MODES = ("longpoll", "sse", "events")


@dataclass
class HttpConfig:
    """Options of an HTTP fallback run."""

    mode: str
    secret_key: str
    clients: int = 5000
    rate: float = 200.0
    duration: float = 20.0
    servers: list[str] = field(default_factory=lambda: ["ours"])
    workers: int = 2
    database_url: str = "postgres://postgres@127.0.0.1:5432/loadtest"
    redis_url: str = "redis://127.0.0.1:6379/9"
    team_size: int = 50
    ramp_per_s: float = 1000.0
    probe_rate: float = 10.0
    log_dir: Path = ROOT / "var" / "loadtest"
    user_prefix: str = "loadtest-"
    progress: bool = True
    base_env: dict[str, str] | None = None


@dataclass
class HttpResult:
    """One server's figures."""

    server: str
    clients: int
    ready: int = 0
    published: int = 0
    publish_failed: int = 0
    delivered: int = 0
    unique: int = 0
    lost: int = 0
    duplicates: int = 0
    foreign: int = 0  # load messages of an earlier run, not counted
    latencies_ms: list[float] = field(default_factory=list)
    rss_before: int = 0
    rss_waiting: int = 0
    pg_max: int = 0
    pg_ceiling: str = ""
    probe_ms: list[float] = field(default_factory=list)
    probe_errors: dict[str, int] = field(default_factory=dict)
    client_errors: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    cpu_s: float = 0.0
    load: float = 0.0
    note: str = ""

    def percentile(self, values: list[float], q: float) -> float:
        """The q-quantile of sorted values (0 when empty)."""
        return values[min(len(values) - 1, int(len(values) * q))] if values else 0.0


# ---------------------------------------------------------------------- client workers


def _worker_main(pipe: Any, host: str, port: int, mode: str, clients: list[tuple[str, list[str]]],
                 ramp_per_s: float, run: str) -> None:
    procstat.raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_worker(pipe, host, port, mode, clients, ramp_per_s, run))


async def _worker(pipe: Any, host: str, port: int, mode: str, clients: list[tuple[str, list[str]]],
                  ramp_per_s: float, run: str) -> None:
    stats, stop = Stats(run), asyncio.Event()
    client = CLIENTS[mode]
    tasks: list[asyncio.Task] = []

    async def ramp() -> None:
        for index, (token, channels) in enumerate(clients):
            tasks.append(asyncio.ensure_future(client(host, port, token, channels, stats, stop)))
            if index % 50 == 49:
                await asyncio.sleep(50 / ramp_per_s)

    ramping = asyncio.ensure_future(ramp())
    while True:
        while not pipe.poll():
            await asyncio.sleep(0.05)
        command = pipe.recv()
        if command == "status":
            pipe.send({"ready": stats.ready, "received": len(stats.received), "requests": stats.requests,
                       "errors": dict(stats.errors)})
        elif command == "collect":
            pipe.send({"received": stats.received, "errors": dict(stats.errors), "requests": stats.requests,
                       "foreign": stats.foreign})
        elif command == "stop":
            stop.set()
            ramping.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            pipe.send("stopped")
            return


class Workers:
    """The client processes of one server's run."""

    def __init__(self, count: int, host: str, port: int, mode: str, clients: list[tuple[str, list[str]]],
                 ramp_per_s: float, run: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes, self.processes = [], []
        for index in range(count):
            mine, theirs = context.Pipe()
            process = context.Process(target=_worker_main, args=(
                theirs, host, port, mode, clients[index::count], ramp_per_s / count, run), daemon=True)
            process.start()
            self.pipes.append(mine)
            self.processes.append(process)

    def call(self, command: str, timeout: float = 60) -> list[Any]:
        """Send a command to every worker and gather the answers."""
        for pipe in self.pipes:
            pipe.send(command)
        answers = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"a client worker did not answer {command!r} within {timeout:.0f}s")
            answers.append(pipe.recv())
        return answers

    def close(self) -> None:
        """Stop the clients and the processes."""
        try:
            self.call("stop", timeout=30)
        except (TimeoutError, OSError, EOFError):
            pass
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()


# ---------------------------------------------------------------------- samplers


class ConnectionSampler(threading.Thread):
    """The PostgreSQL connections of one application name, every 100 ms; keeps the maximum."""

    def __init__(self, database_url: str, application_name: str) -> None:
        super().__init__(daemon=True)
        self.database_url = database_url
        self.application_name = application_name
        self.maximum = 0
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        """Sample until ``halt`` is set."""
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True, application_name="renum-loadtest-sampler") as conn:
            while not self.halt.is_set():
                (count,) = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                        [self.application_name]).fetchone()
                self.maximum = max(self.maximum, count)
                self.samples += 1
                self.halt.wait(0.1)


class UnreadProbe(threading.Thread):
    """``GET /api/notifications/unread-count/`` at a fixed rate from one more client."""

    def __init__(self, port: int, token: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.port, self.token, self.rate = port, token, rate
        self.latencies_ms: list[float] = []
        self.errors: dict[str, int] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        """Probe until ``halt`` is set."""
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
        next_at = time.monotonic()
        while not self.halt.is_set():
            started = time.perf_counter()
            try:
                connection.request("GET", "/api/notifications/unread-count/",
                                   headers={"Authorization": f"Bearer {self.token}"})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    key = f"http {response.status}"
                    self.errors[key] = self.errors.get(key, 0) + 1
                else:
                    self.latencies_ms.append((time.perf_counter() - started) * 1000)
            except Exception as exc:
                key = type(exc).__name__
                self.errors[key] = self.errors.get(key, 0) + 1
                connection.close()
                connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
            next_at += 1 / self.rate
            self.halt.wait(max(0.0, next_at - time.monotonic()))


# ---------------------------------------------------------------------- servers


class HttpServer(ServerProcess):
    """``ours`` from this tree or from another commit's files."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        _, _, commit = name.partition("@")
        super().__init__(ServerSpec("ours", "uvicorn", "websockets-sansio"), env, log_dir)
        self.source = source_at(commit, log_dir) if commit else ROOT
        self.label = f"ours at {commit}" if commit else "ours"
        self.env = dict(env, PYTHONPATH=str(self.source), PGAPPNAME=f"renum-loadtest-{self.port}")
        self.cwd = self.source


# ---------------------------------------------------------------------- the run


def _channels(mode: str, user_id: int, team_id: int) -> list[str]:
    return [f"user:{user_id}", "broadcast", f"team:{team_id}"]


def _say(config: HttpConfig, text: str) -> None:
    if config.progress:
        print(text, flush=True)


def run_server(config: HttpConfig, name: str, users: list[int], teams: list[int], tokens: list[str]) -> HttpResult:
    """One server: start it, let the clients wait, publish, drain, measure, stop."""
    from loadtest.runner import Publisher

    layer_prefix = f"lt{os.getpid()}x{int(time.time())}"
    env = server_env(ServerSpec("ours", "uvicorn", "websockets-sansio"), config.base_env or dict(os.environ),
                     database_url=config.database_url, redis_url=config.redis_url,
                     secret_key=config.secret_key, layer_prefix=layer_prefix)
    server = HttpServer(name, env, config.log_dir)
    result = HttpResult(server=server.label, clients=config.clients)
    pool_max = int(env.get("DATABASE_POOL_MAX_SIZE", "8"))
    result.pg_ceiling = ("none" if name.partition("@")[2] or pool_max == 0 else f"{pool_max} + 1")
    server.start()
    sampler = ConnectionSampler(config.database_url, server.env["PGAPPNAME"])
    sampler.start()
    workers = probe = None
    try:
        time.sleep(1.0)
        _warm_up(server.port, tokens[0], config.mode)
        result.rss_before = server.rss_bytes()
        clients = [(tokens[i + 1], _channels(config.mode, users[i + 1], teams[i + 1])) for i in range(config.clients)]
        # Messages are counted by the run id they carry: notifications left over from an
        # earlier run (a publisher killed before its relay delivered them) are not this run's.
        run_id = "lt" + secrets.token_hex(8)
        workers = Workers(config.workers, LOOPBACK, server.port, config.mode, clients, config.ramp_per_s, run_id)
        deadline = time.monotonic() + 60 + config.clients / config.ramp_per_s * 3
        while time.monotonic() < deadline:
            status = workers.call("status")
            result.ready = sum(s["ready"] for s in status)
            if result.ready >= config.clients:
                break
            _say(config, f"{server.label}: {result.ready}/{config.clients} clients waiting")
            time.sleep(1)
        if result.ready < config.clients:
            result.note = f"only {result.ready} of {config.clients} clients got their first answer"
        time.sleep(3)  # every client is in its waiting request now
        result.rss_waiting = server.rss_bytes()
        probe = UnreadProbe(server.port, tokens[0], config.probe_rate)
        probe.start()
        publisher = Publisher(env, {"mode": "notify", "targets": users[1:config.clients + 1], "rate": config.rate,
                                    "duration": config.duration, "threads": 4, "redis_url": config.redis_url,
                                    "bare_prefix": "", "run": run_id})
        try:
            publisher.wait_ready()
            cpu_before = server.cpu_seconds()
            publisher.go()
            _say(config, f"{server.label}: publishing {config.rate:g}/s for {config.duration:g}s")
            report = publisher.result(timeout=config.duration * 3 + 60)
        finally:
            publisher.stop()
        result.published, result.publish_failed = report["published"], report["failed"]
        _drain(config, workers, result.published, server.label)
        result.cpu_s = server.cpu_seconds() - cpu_before
        result.load = procstat.load_average()
        probe.halt.set()
        probe.join(15)
        collected = workers.call("collect", timeout=120)
        seen: dict[int, float] = {}
        latencies = []
        for reply in collected:
            result.requests += reply["requests"]
            result.foreign += reply["foreign"]
            for kind, count in reply["errors"].items():
                result.client_errors[kind] = result.client_errors.get(kind, 0) + count
            for seq, sent, received in reply["received"]:
                result.delivered += 1
                if seq in seen:
                    result.duplicates += 1
                    continue
                seen[seq] = received
                latencies.append((received - sent) * 1000)
        result.unique = len(seen)
        result.lost = max(0, result.published - len(seen))  # published counts only successful creates
        result.latencies_ms = sorted(latencies)
        result.probe_ms = sorted(probe.latencies_ms)
        result.probe_errors = dict(probe.errors)
        if not server.alive():
            result.note = (result.note + "; " if result.note else "") + f"the server died; see {server.log_path}"
    finally:
        if probe is not None:
            probe.halt.set()
        if workers is not None:
            workers.close()
        sampler.halt.set()
        sampler.join(5)
        result.pg_max = sampler.maximum
        server.stop()
    return result


def _warm_up(port: int, token: str, mode: str) -> None:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    if mode == "events":
        connection.request("GET", "/api/realtime/events/?channel=broadcast&timeout=0", headers=headers)
    else:
        connection.request("POST", "/api/realtime/poll/", body=b'{"channels": {"broadcast": null}, "timeout": 0}',
                           headers={**headers, "Content-Type": "application/json"})
    connection.getresponse().read()
    connection.close()


def _drain(config: HttpConfig, workers: Workers, expected: int, label: str, idle_s: float = 5.0) -> None:
    deadline = time.monotonic() + max(30.0, config.duration)
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        received = sum(s["received"] for s in workers.call("status"))
        if received >= expected:
            return
        if received != last:
            last, last_change = received, time.monotonic()
        elif time.monotonic() - last_change > idle_s:
            return
        _say(config, f"{label}: {received}/{expected} delivered")
        time.sleep(0.5)


def run(config: HttpConfig) -> list[HttpResult]:
    """Provision the users and teams, then measure each server in turn."""
    if config.mode not in MODES:
        raise ValueError(f"unknown mode {config.mode!r}: {', '.join(MODES)}")
    procstat.raise_nofile()
    ensure_database(config.database_url)
    base = config.base_env or dict(os.environ)
    env = server_env(ServerSpec("ours", "uvicorn", "websockets-sansio"), base, database_url=config.database_url,
                     redis_url=config.redis_url, secret_key=config.secret_key, layer_prefix="")
    users = provision_users(env, config.clients + 1, config.user_prefix, True)
    teams = provision_teams(env, users, config.team_size, config.user_prefix)
    tokens = mint_tokens(users, 4 * 3600)
    return [run_server(config, name, users, teams, tokens) for name in config.servers]


def markdown(results: list[HttpResult], title: str, command: str) -> str:
    """The results as a table, one column per server."""
    def ms(values: list[float], q: float, r: HttpResult) -> str:
        return f"{r.percentile(values, q):.1f}" if values else "-"

    rows = [
        ("clients (waiting / asked)", lambda r: f"{r.ready} / {r.clients}"),
        ("notifications created (failed)", lambda r: f"{r.published} ({r.publish_failed})"),
        ("delivered (unique)", lambda r: f"{r.delivered} ({r.unique})"),
        ("lost", lambda r: str(r.lost)),
        ("duplicates", lambda r: str(r.duplicates)),
        ("messages of an earlier run (not counted)", lambda r: str(r.foreign)),
        ("create -> response p50 / p99 / max ms", lambda r: f"{ms(r.latencies_ms, 0.5, r)} / "
         f"{ms(r.latencies_ms, 0.99, r)} / {r.latencies_ms[-1] if r.latencies_ms else 0:.1f}"),
        ("server RSS before / waiting (MB)", lambda r: f"{r.rss_before / 2**20:.1f} / {r.rss_waiting / 2**20:.1f}"),
        ("RSS per waiting client (KB)", lambda r: f"{(r.rss_waiting - r.rss_before) / max(1, r.ready) / 1024:.1f}"),
        ("max PostgreSQL connections (ceiling)", lambda r: f"{r.pg_max} ({r.pg_ceiling})"),
        ("unread-count p50 / p99 ms", lambda r: f"{ms(r.probe_ms, 0.5, r)} / {ms(r.probe_ms, 0.99, r)}"),
        ("unread-count errors", lambda r: ", ".join(f"{k}: {v}" for k, v in r.probe_errors.items()) or "0"),
        ("client errors", lambda r: ", ".join(f"{k}: {v}" for k, v in sorted(r.client_errors.items())) or "0"),
        ("requests", lambda r: str(r.requests)),
        ("server CPU s in the window", lambda r: f"{r.cpu_s:.1f}"),
        ("load average after", lambda r: f"{r.load:.2f}"),
    ]
    lines = [f"### {title}", "", f"`{command}`", "",
             "| | " + " | ".join(r.server for r in results) + " |",
             "|---|" + "---|" * len(results)]
    lines += [f"| {name} | " + " | ".join(value(r) for r in results) + " |" for name, value in rows]
    notes = [f"- {r.server}: {r.note}" for r in results if r.note]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
