"""Redis commands and Redis CPU spent during a phase of a run, from INFO commandstats and INFO cpu.

``snapshot`` reads every command's ``calls`` (INFO commandstats) and the process CPU time
(``used_cpu_user`` + ``used_cpu_sys``, INFO cpu: commands, networking and background work) of
the Redis that a run uses: the server, or every master of a Redis Cluster, summed. The
difference of two snapshots is what the whole Redis did in between, so the figures are only the
run's own on a Redis nobody else uses (a private ``redis-server`` or cluster): pass
``--redis-stats`` only then. Commands run by scripts are counted too (a publish is one EVALSHA
plus the commands inside it). The CPU is the process's, not commandstats' ``usec``, which counts
a script's inner commands twice (in EVALSHA and in each command).
"""

from __future__ import annotations

from typing import Any

import redis

from realtime.storage import topology

CPU = "(process cpu)"


def snapshot(redis_url: str) -> dict[str, tuple[int, int]]:
    """``{command: (calls, usec)}`` over the Redis of ``redis_url`` (all masters of a Cluster)."""
    parsed = topology.parse(redis_url)
    if parsed.kind == "cluster":
        client: Any = topology.cluster_client(parsed, asynchronous=False, socket_timeout=5)
        per_node = list(client.info("commandstats", target_nodes=client.PRIMARIES).values())
        cpu = list(client.info("cpu", target_nodes=client.PRIMARIES).values())
        client.close()
    else:
        client = redis.Redis(connection_pool=topology.sync_pool(parsed, blocking=False, socket_timeout=5))
        per_node, cpu = [client.info("commandstats")], [client.info("cpu")]
        client.close()
    totals: dict[str, tuple[int, int]] = {}
    for stats in per_node:
        for name, values in stats.items():
            command = name[len("cmdstat_"):]
            calls, _ = totals.get(command, (0, 0))
            totals[command] = (calls + int(values["calls"]), 0)
    # The process CPU of every node, in us, under a name no command has.
    totals[CPU] = (0, int(sum(float(n["used_cpu_user"]) + float(n["used_cpu_sys"]) for n in cpu) * 1e6))
    return totals


def delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """What ran between two snapshots, per command (commands that did not run are left out)."""
    out = {}
    for name, (calls, usec) in after.items():
        was = before.get(name, (0, 0))
        if calls > was[0] or name == CPU:
            out[name] = (calls - was[0], usec - was[1])
    return out


def summary(phase: dict[str, tuple[int, int]], per: int) -> str:
    """``N commands, U us`` (Redis process CPU) per unit, then the commands that ran most."""
    if not per or not phase:
        return "-"
    calls = sum(c for c, _ in phase.values())
    usec = phase.get(CPU, (0, 0))[1]
    top = sorted(((n, v) for n, v in phase.items() if n != CPU), key=lambda item: -item[1][0])[:5]
    detail = ", ".join(f"{name} {count / per:.2f}" for name, (count, _) in top)
    return f"{calls / per:.2f} commands, {usec / per:.1f} us ({detail})"
