"""Catching a reader up on a channel: its position, the replay after a client's position, a snapshot.

Shared by every transport (the socket's ``subscribe``, the long poll, server-sent events) so
that positions, ``recovered`` and audience rules are the same whichever way a client reads.
The caller joins the hub *before* calling this, so nothing published between the read and
the first live message is missed; live frames at or below ``offset`` are the caller's to skip.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from realtime.core.channels import ChannelPolicy, call_check
from realtime.fanout.hub import audience_allows
from realtime.schemas import envelope_bytes, envelope_parts
from realtime.storage import redis as rt_redis
from realtime.storage import streams


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Where a channel stands for one reader, and what that reader must be sent first."""

    channel: str
    epoch: str
    offset: int
    recovered: bool  # every message after the reader's position is in ``replay``
    replay: list[tuple[int, str]]  # (offset, envelope) after the reader's position, as its audience allows
    snapshot: str | None  # the channel's current state, when not recovered and the policy has one


async def catch_up(policy: ChannelPolicy, user: Any, user_key: bytes, channel: str,
                   since: tuple[str, int] | None) -> CatchUp:
    """Read a channel's position and, from ``since`` (epoch, offset), what the reader missed.

    All or nothing, as ``streams.recover``: another epoch or a trimmed history gives
    ``recovered=False`` and no replay, never a partial one.
    """
    result = streams.parse_read(await rt_redis.async_script(streams.READ_LUA)(
        *streams.read_args(channel, since[1] if since is not None else -1)))
    return await _caught_up(policy, user, user_key, channel, since, result)


async def catch_up_many(policies: dict[str, ChannelPolicy], user: Any, user_key: bytes,
                        positions: dict[str, tuple[str, int] | None]) -> list[CatchUp]:
    """``catch_up`` for several channels, their reads in one pipeline (one round trip and one
    pooled Redis connection for a long poll's channels, not one each)."""
    reads = [streams.read_args(channel, since[1] if (since := positions.get(channel)) is not None else -1)
             for channel in policies]
    if rt_redis.is_cluster():
        # redis-py's cluster pipelines refuse scripts; the channels' keys live on different
        # nodes anyway, so the reads go out together, one per channel.
        script = rt_redis.async_script(streams.READ_LUA)
        replies = await asyncio.gather(*(script(keys=keys, args=args) for keys, args in reads))
    else:
        replies = await rt_redis.evalsha_many(streams.READ_LUA, reads)
    return [await _caught_up(policy, user, user_key, channel, positions.get(channel), streams.parse_read(reply))
            for (channel, policy), reply in zip(policies.items(), replies, strict=True)]


async def _caught_up(policy: ChannelPolicy, user: Any, user_key: bytes, channel: str,
                     since: tuple[str, int] | None, result: streams.ReadResult) -> CatchUp:
    records = streams.recover(result, *since) if since is not None else None
    recovered = records is not None
    replay = [(r.offset, r.body.decode()) for r in records or () if audience_allows(r.audience, user_key)]
    snapshot = None
    if policy.snapshot is not None and not recovered:
        state = await call_check(policy.snapshot, user, channel)
        if state is not None:
            message_type, payload = state
            head, tail = envelope_parts(channel=channel, message_type=message_type, payload=payload,
                                        sender="system", snapshot=True)
            snapshot = envelope_bytes(head, tail, offset=result.offset, epoch=result.epoch).decode()
    return CatchUp(channel, result.epoch, result.offset, recovered, replay, snapshot)
