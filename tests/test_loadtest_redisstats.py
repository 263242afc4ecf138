"""The load tool's Redis counters, on a redis-server of the test's own."""

from __future__ import annotations

from loadtest import redisstats
from tests.redis_servers import RedisServer


def test_a_phase_counts_each_command_and_the_redis_process_cpu(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        before = redisstats.snapshot(server.url)
        client = server.client()
        for n in range(5):
            client.set(f"k{n}", n)
        client.eval("redis.call('INCR', KEYS[1]) return redis.call('INCR', KEYS[1])", 1, "counter")

        phase = redisstats.delta(before, redisstats.snapshot(server.url))

        # The script's inner commands count as commands too; the rest is the snapshots' own
        # connections (HELLO) and INFO calls.
        calls = {name: calls for name, (calls, _) in phase.items() if name != redisstats.CPU}
        assert {name: calls[name] for name in ("set", "eval", "incr")} == {"set": 5, "eval": 1, "incr": 2}
        assert set(calls) == {"set", "eval", "incr", "info", "hello"}
        assert phase[redisstats.CPU][1] >= 0
        total = sum(calls.values())
        assert redisstats.summary(phase, 2).startswith(f"{total / 2:.2f} commands, ")
        assert redisstats.summary({}, 5) == "-"
    finally:
        server.kill()
