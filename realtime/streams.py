"""Channel streams in Redis: offsets, epochs and bounded history, changed atomically in Lua.

Each channel has a meta hash (``epoch``, ``offset``) and a history stream whose entry ids are
the offsets. One script assigns the next offset, appends to the history and publishes, so
offsets grow by exactly one per message and history and live delivery never disagree.
When the meta hash is lost (Redis restarted without persistence, or the channel idle past
META_TTL_S) the next access creates a new epoch, which tells clients that offsets restarted.

A *record* is what the history stores and pub/sub carries:
``<offset> TAB <epoch> TAB <audience> TAB <coalesce key> TAB <envelope JSON>``; the audience is
empty (everyone subscribed), ``-1,2`` (everyone but users 1 and 2) or ``+3,4`` (only users 3
and 4). The coalesce key is empty, or names the state a message replaces (e.g. one
execution's progress): a socket that is behind keeps only the newest queued message per key.
JSON never contains a raw tab, so splitting at the first four tabs is exact and cheap.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from realtime.conf import setting

PUBLISH_LUA = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[7]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('EXPIRE', KEYS[1], ARGV[6])
local record = offset .. '\\t' .. epoch .. '\\t' .. ARGV[3] .. '\\t' .. ARGV[9] .. '\\t' ..
  ARGV[1] .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[2]
if tonumber(ARGV[4]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-1', 'r', record)
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
redis.call('PUBLISH', ARGV[8], record)
return {offset, epoch}
"""

# A channel's epoch and offset (meta hash, history stream), creating the epoch of a channel
# never seen (or whose meta hash was lost): shared by READ_LUA and the registry's script.
POSITION_LUA = """
local function position(meta, history, new_epoch, meta_ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
    redis.call('EXPIRE', meta, meta_ttl)
    redis.call('DEL', history)
  end
  return epoch, tonumber(redis.call('HGET', meta, 'offset') or '0')
end
"""

# Returns {epoch, offset, records after `since`}; creates the epoch of a channel never seen.
# With since < 0 only the position is read.
READ_LUA = POSITION_LUA + """
local epoch, offset = position(KEYS[1], KEYS[2], ARGV[2], ARGV[3])
local since = tonumber(ARGV[1])
local records = {}
if since >= 0 and since < offset then
  local entries = redis.call('XRANGE', KEYS[2], '(' .. since .. '-1', '+', 'COUNT', ARGV[4])
  for i, entry in ipairs(entries) do
    records[i] = entry[2][2]
  end
end
return {epoch, offset, records}
"""


def new_epoch() -> str:
    """A fresh epoch identifier (JSON-safe)."""
    return secrets.token_hex(6)


def meta_key(channel: str) -> str:
    """Redis key of a channel's epoch and offset (hash-tagged with the channel for Cluster)."""
    return f"{setting('KEY_PREFIX')}:{{{channel}}}:m"


def history_key(channel: str) -> str:
    """Redis key of a channel's history stream."""
    return f"{setting('KEY_PREFIX')}:{{{channel}}}:h"


def pubsub_name(channel: str) -> str:
    """Redis pub/sub channel that carries a channel's live records."""
    return f"{setting('KEY_PREFIX')}:p:{channel}"


def pubsub_prefix() -> str:
    """Prefix of every pub/sub channel name, stripped by the hub to get the channel back."""
    return f"{setting('KEY_PREFIX')}:p:"


@dataclass(frozen=True, slots=True)
class Record:
    """One stored or live message of a channel, parsed from its wire form."""

    offset: int
    epoch: str
    audience: bytes
    key: bytes
    body: bytes
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Record:
        """Split a record into its parts."""
        offset, epoch, audience, key, body = raw.split(b"\t", 4)
        return cls(int(offset), epoch.decode(), audience, key, body, raw)


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A channel's position and the records after a given offset."""

    epoch: str
    offset: int
    records: list[Record]


def publish_args(
    channel: str, head: bytes, tail: bytes, audience: str, coalesce_key: str = ""
) -> tuple[list[str], list]:
    """Keys and arguments of PUBLISH_LUA for one message."""
    return (
        [meta_key(channel), history_key(channel)],
        [head, tail, audience, setting("HISTORY_SIZE"), setting("HISTORY_TTL_S"), setting("META_TTL_S"),
         new_epoch(), pubsub_name(channel), coalesce_key],
    )


def read_args(channel: str, since: int) -> tuple[list[str], list]:
    """Keys and arguments of READ_LUA."""
    return (
        [meta_key(channel), history_key(channel)],
        [since, new_epoch(), setting("META_TTL_S"), setting("HISTORY_SIZE") + 1],
    )


def parse_read(reply: list) -> ReadResult:
    """Turn READ_LUA's reply into a ReadResult."""
    epoch, offset, records = reply
    epoch = epoch.decode() if isinstance(epoch, bytes) else epoch
    return ReadResult(epoch, int(offset), [Record.parse(r) for r in records])


def recover(result: ReadResult, epoch: str, offset: int) -> list[Record] | None:
    """The records after ``(epoch, offset)`` when the history still holds every one, else None.

    All or nothing: a trimmed history or another epoch gives None, never a partial replay.
    """
    if result.epoch != epoch or offset > result.offset:
        return None
    missing = result.offset - offset
    if missing == 0:
        return []
    records = result.records
    if len(records) < missing or records[0].offset != offset + 1:
        return None
    return records[:missing]
