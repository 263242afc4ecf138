"""Channel streams in Redis: offsets, epochs and bounded history, changed atomically in Lua.

Each channel has a meta hash (``epoch``, ``offset``) and a history stream whose entry ids are
the offsets. One script assigns the next offset, appends to the history and publishes, so
offsets grow by exactly one per message and history and live delivery never disagree.
When the meta hash is lost (Redis restarted without persistence, or the channel idle past
META_TTL_S), or was written under another generation of the data set (another Redis server:
see GENERATION_LUA), the next access creates a new epoch, which tells clients to resync.
Messages from the outbox carry an idempotency key, so a retried delivery is appended once.

A *record* is what the history stores and pub/sub carries:
``<offset> TAB <epoch> TAB <audience> TAB <coalesce key> TAB <envelope JSON>``; the audience is
empty (everyone subscribed), ``-1,2`` (everyone but users 1 and 2) or ``+3,4`` (only users 3
and 4). The coalesce key is empty, or names the state a message replaces (e.g. one
execution's progress): a socket that is behind keeps only the newest queued message per key.
JSON never contains a raw tab, so splitting at the first four tabs is exact and cheap.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from realtime.conf import setting
from realtime.storage import randomness
from realtime.storage import redis as rt_redis

# The generation of the Redis data set: a key that a Redis replaced by an empty one (or by a
# replica that never had it) lacks, and that ``realtime.storage.redis`` renews whenever the server
# behind a new connection is another one (its run id changed: restarted, possibly losing the
# last writes of its AOF, or failed over). A channel whose meta hash was written under another
# generation gets a new epoch on its next access: what clients saw may no longer be in Redis,
# and an offset they saw may be assigned again, so they must resync. The key's name is derived
# from the meta key's: one server or a Sentinel master; on a Redis Cluster the scripts use
# CLUSTER_GENERATION_LUA instead (``realtime.storage.redis.script_source``).
GENERATION_LUA = """
local function generation(meta, fresh)
  local key = string.sub(meta, 1, string.find(meta, ':{', 1, true) - 1) .. ':gen'
  local current = redis.call('GET', key)
  if not current then
    current = fresh
    redis.call('SET', key, current)
  end
  return current
end
"""

# GENERATION_LUA on a Redis Cluster (``realtime.storage.redis.script_source``): the generation is the
# run id of the node that owns the channel's slot. A restarted node or a promoted replica has
# another one, so its channels get a new epoch on their next access, as on one server.
CLUSTER_GENERATION_LUA = """
local function generation(meta, fresh)
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end
"""

# A channel's epoch and offset (meta hash, history stream), creating the epoch of a channel
# never seen (or whose meta hash was lost, or was written under another generation): shared
# by READ_LUA, PUBLISH_LUA and the registry's script. Offsets keep counting across epochs.
POSITION_LUA = GENERATION_LUA + """
local function position(meta, history, new_epoch, meta_ttl)
  local gen = generation(meta, new_epoch)
  local state = redis.call('HMGET', meta, 'epoch', 'g', 'offset')
  local epoch = state[1]
  if not epoch or state[2] ~= gen then
    epoch = new_epoch
    redis.call('HSET', meta, 'epoch', epoch, 'g', gen, 'offset', tonumber(state[3] or '0'))
    redis.call('EXPIRE', meta, meta_ttl)
    redis.call('DEL', history)
  end
  return epoch, tonumber(state[3] or '0')
end
"""

# One message: KEYS meta, history, idempotency set; ARGV head, tail, audience, history size,
# history TTL, meta TTL, new epoch, pub/sub channel, coalesce key, idempotency key ('' for none).
# A message whose idempotency key the channel's set already holds (a retried delivery that
# had reached Redis) is not appended again: the reply is its offset, the current epoch and 1.
# The set keeps the keys of the channel's last 2 x history-size messages.
_PUBLISH_FUNCTION_LUA = POSITION_LUA + """
local function publish(k, a)
  local idem = ARGV[a + 10]
  if idem and idem ~= '' then
    local seen = redis.call('ZSCORE', KEYS[k + 3], idem)
    if seen then
      return {tonumber(seen), redis.call('HGET', KEYS[k + 1], 'epoch') or '', 1}
    end
  end
  local epoch = position(KEYS[k + 1], KEYS[k + 2], ARGV[a + 7], ARGV[a + 6])
  local offset = redis.call('HINCRBY', KEYS[k + 1], 'offset', 1)
  redis.call('EXPIRE', KEYS[k + 1], ARGV[a + 6])
  local record = offset .. '\\t' .. epoch .. '\\t' .. ARGV[a + 3] .. '\\t' .. ARGV[a + 9] .. '\\t' ..
    ARGV[a + 1] .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[a + 2]
  local size = tonumber(ARGV[a + 4])
  if size > 0 then
    redis.call('XADD', KEYS[k + 2], 'MAXLEN', size, offset .. '-1', 'r', record)
    redis.call('EXPIRE', KEYS[k + 2], ARGV[a + 5])
  end
  redis.call('PUBLISH', ARGV[a + 8], record)
  if idem and idem ~= '' then
    redis.call('ZADD', KEYS[k + 3], offset, idem)
    redis.call('EXPIRE', KEYS[k + 3], ARGV[a + 6])
    local keep = math.max(size, 100)
    local count = redis.call('ZCARD', KEYS[k + 3])
    if count > 2 * keep then
      redis.call('ZREMRANGEBYRANK', KEYS[k + 3], 0, count - keep - 1)
    end
  end
  return {offset, epoch, 0}
end
"""

# Publishes one message (keys and arguments above); replies {offset, epoch, duplicate}.
PUBLISH_LUA = _PUBLISH_FUNCTION_LUA + """
return publish(0, 0)
"""

# Publishes many messages in order, each with its 3 keys and 10 arguments one after the other
# (those of PUBLISH_LUA); replies a {offset, epoch, duplicate} per message, as PUBLISH_LUA would
# one by one. One script call where PUBLISH_LUA takes one per message: for one server only (the
# keys of many channels are in many slots of a Cluster). What PUBLISH_LUA does per message is
# done here once per channel of the call: the generation is read once, a channel's position
# once, and its offset, TTLs and idempotency keys are written once, after its last message
# (``flush``). So consecutive messages of one channel (``relay.publish_pipelined`` groups them)
# cost little more than their XADD and PUBLISH. Should a command fail midway, what the call
# appended so far is still written down (offsets, idempotency keys) before the error is raised,
# so no offset is assigned twice and a retry appends only what is missing.
PUBLISH_MANY_LUA = POSITION_LUA + """
local generations = {}
local cached_generation = generation
generation = function(meta, fresh)
  local key = string.sub(meta, 1, string.find(meta, ':{', 1, true) or 0)
  local gen = generations[key]
  if not gen then
    gen = cached_generation(meta, fresh)
    generations[key] = gen
  end
  return gen
end
local channels, touched = {}, {}
local replies = {}

local function publish_one(k, a)
  local meta = KEYS[k + 1]
  local c = channels[meta]
  local idem = ARGV[a + 10]
  if idem ~= '' then
    local seen = c and c.ids[idem]
    if not seen then
      seen = redis.call('ZSCORE', KEYS[k + 3], idem)
    end
    if seen then
      return {tonumber(seen), c and c.epoch or redis.call('HGET', meta, 'epoch') or '', 1}
    end
  end
  if not c then
    local epoch, offset = position(meta, KEYS[k + 2], ARGV[a + 7], ARGV[a + 6])
    c = {epoch = epoch, offset = offset, start = offset, history = KEYS[k + 2], idset = KEYS[k + 3],
         meta_ttl = ARGV[a + 6], history_ttl = ARGV[a + 5], size = 0, ids = {}, members = {}}
    channels[meta] = c
    touched[#touched + 1] = meta
  end
  local offset = c.offset + 1
  local epoch = c.epoch
  local record = offset .. '\\t' .. epoch .. '\\t' .. ARGV[a + 3] .. '\\t' .. ARGV[a + 9] .. '\\t' ..
    ARGV[a + 1] .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[a + 2]
  local size = tonumber(ARGV[a + 4])
  if size > 0 then
    redis.call('XADD', c.history, 'MAXLEN', size, offset .. '-1', 'r', record)
    if size > c.size then c.size = size end
    c.history_ttl = ARGV[a + 5]
  end
  -- Appended (or nothing to append): the offset is taken and the key is known, whatever follows.
  c.offset = offset
  c.meta_ttl = ARGV[a + 6]
  if idem ~= '' then
    c.ids[idem] = offset
    c.members[#c.members + 1] = offset
    c.members[#c.members + 1] = idem
  end
  redis.call('PUBLISH', ARGV[a + 8], record)
  return {offset, epoch, 0}
end

local function flush()
  for _, meta in ipairs(touched) do
    local c = channels[meta]
    if c.offset > c.start then
      redis.call('HSET', meta, 'offset', c.offset)
    end
    redis.call('EXPIRE', meta, c.meta_ttl)
    if c.size > 0 then
      redis.call('EXPIRE', c.history, c.history_ttl)
    end
    if #c.members > 0 then
      for first = 1, #c.members, 400 do
        redis.call('ZADD', c.idset, unpack(c.members, first, math.min(first + 399, #c.members)))
      end
      redis.call('EXPIRE', c.idset, c.meta_ttl)
      local keep = math.max(c.size, 100)
      local count = redis.call('ZCARD', c.idset)
      if count > 2 * keep then
        redis.call('ZREMRANGEBYRANK', c.idset, 0, count - keep - 1)
      end
    end
  end
end

local ok, failure = pcall(function()
  for i = 0, #KEYS / 3 - 1 do
    replies[i + 1] = publish_one(3 * i, 10 * i)
  end
end)
flush()
if not ok then
  error(failure)
end
return replies
"""

# Gives a channel a new epoch at once (events it should have carried were discarded), and
# tells the hubs: an empty record in the new epoch, on which they close the channel's sockets
# with 1012 so that clients resubscribe and resync. KEYS: meta, history; ARGV: new epoch,
# meta TTL, pub/sub channel.
ROTATE_LUA = GENERATION_LUA + """
local gen = generation(KEYS[1], ARGV[1])
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'g', gen, 'offset', offset)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[3], offset .. '\\t' .. ARGV[1] .. '\\t\\t\\t')
return offset
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

# Renews the generation when the server behind a connection is not the one that last
# confirmed it (``realtime.storage.redis``). KEYS: generation, generation's run id; ARGV: run id,
# fresh generation. Returns 1 when it renewed it.
CHECK_GENERATION_LUA = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


def new_epoch() -> str:
    """A fresh epoch identifier (JSON-safe): 6 random bytes in hex. Every read and publish offers
    one (used only when the channel has no epoch yet), so they come from a buffer
    (``realtime.storage.randomness``), not a system call each."""
    return randomness.token_hex(6)


def new_epochs(count: int) -> list[str]:
    """``count`` fresh epoch identifiers (``new_epoch``'s), from one read of the random source."""
    random = secrets.token_hex(6 * count)
    return [random[start:start + 12] for start in range(0, 12 * count, 12)]


def meta_key(channel: str) -> str:
    """Redis key of a channel's epoch and offset (hash-tagged with the channel for Cluster)."""
    return _channel_key(setting("KEY_PREFIX"), channel, "m")


def idempotency_key(channel: str) -> str:
    """Redis key of the idempotency keys of a channel's last messages (sorted by offset)."""
    return _channel_key(setting("KEY_PREFIX"), channel, "i")


def generation_key() -> str:
    """Redis key of the data set's generation (see GENERATION_LUA)."""
    return f"{setting('KEY_PREFIX')}:gen"


def generation_run_key() -> str:
    """Redis key of the run id of the server that last confirmed the generation."""
    return f"{setting('KEY_PREFIX')}:gen:run"


def history_key(channel: str) -> str:
    """Redis key of a channel's history stream."""
    return _channel_key(setting("KEY_PREFIX"), channel, "h")


def pubsub_name(channel: str) -> str:
    """Redis pub/sub channel that carries a channel's live records; on a Cluster a shard
    channel in the slot of the channel's keys (SPUBLISH from the publish script)."""
    return _pubsub_name(setting("KEY_PREFIX"), channel, rt_redis.is_cluster())


def _channel_key(prefix: str, channel: str, kind: str) -> str:
    return f"{prefix}:{{{channel}}}:{kind}"


def _pubsub_name(prefix: str, channel: str, cluster: bool) -> str:
    return f"{prefix}:p:{{{channel}}}" if cluster else f"{prefix}:p:{channel}"


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
    channel: str, head: bytes, tail: bytes, audience: str, coalesce_key: str = "", idempotency: str = ""
) -> tuple[list[str], list]:
    """Keys and arguments of PUBLISH_LUA for one message (``idempotency``: its key, or '')."""
    return publish_args_many([(channel, head, tail, audience, coalesce_key, idempotency)])[0]


def publish_args_many(messages: Iterable[tuple[str, bytes, bytes, str, str, str]]) -> list[tuple[list[str], list]]:
    """``publish_args`` of many messages ``(channel, head, tail, audience, coalesce key,
    idempotency key)``, reading the settings once rather than six times per message."""
    prefix = setting("KEY_PREFIX")
    history_size, history_ttl, meta_ttl = setting("HISTORY_SIZE"), setting("HISTORY_TTL_S"), setting("META_TTL_S")
    cluster = rt_redis.is_cluster()
    messages = list(messages)
    epochs = new_epochs(len(messages))
    return [
        ([_channel_key(prefix, channel, "m"), _channel_key(prefix, channel, "h"), _channel_key(prefix, channel, "i")],
         [head, tail, audience, history_size, history_ttl, meta_ttl, epoch,
          _pubsub_name(prefix, channel, cluster), coalesce_key, idempotency])
        for (channel, head, tail, audience, coalesce_key, idempotency), epoch in zip(messages, epochs, strict=True)
    ]


def rotate_args(channel: str) -> tuple[list[str], list]:
    """Keys and arguments of ROTATE_LUA."""
    return [meta_key(channel), history_key(channel)], [new_epoch(), setting("META_TTL_S"), pubsub_name(channel)]


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
