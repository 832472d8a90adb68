"""The Lua scripts of the Redis layer, and the key and envelope layout they share.

How this works: every queue is a Redis list ``<prefix>q:<queue>`` of
envelopes. An envelope is a msgpack array ``[expires_at, channel, body]``
written with a fixed head -- ``0x93`` (array of 3), ``0xcb`` (float64) and the
8-byte big-endian expiry -- so Lua reads the expiry with ``struct.unpack`` and
the channel name from the str header at byte 11 without decoding the body.

Each script receives the same first four arguments: the key prefix, ``now``
from the layer's clock (never Redis ``TIME``), the list TTL in ms and the
counter TTL in s. Before a script looks at a queue it drops the expired
messages at its head, counts them, and evicts their channels from every
group through the reverse index ``<prefix>cg:<channel>`` (a set of group
names). Groups are sorted sets ``<prefix>g:<group>`` of channel -> add time.
The evicted ``(channel, group)`` pairs are returned too, so that with several
shards the layer removes the member from a group living on another server.

Counters: ``<prefix>s:<queue>`` (a hash per queue, with a TTL) and
``<prefix>stats`` (this server's totals). Single-reader (``?``) channels are
many and short-lived, so they count in the totals only.

Key TTLs are garbage collection only, in real time with generous margins;
every expiry decision is taken by comparing envelopes with ``now``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import msgpack

#: A msgpack array of 3 whose first item is a float64.
ENVELOPE_HEAD = b"\x93\xcb"


def envelope_head(expires_at: float) -> bytes:
    """The fixed first 10 bytes of an envelope expiring at ``expires_at``."""
    return ENVELOPE_HEAD + struct.pack(">d", float(expires_at))


def envelope_tail(body: bytes) -> bytes:
    """The body as a msgpack bin, the last item of an envelope."""
    return msgpack.packb(body, use_bin_type=True)


def make_envelope(expires_at: float, channel: str, body: bytes) -> bytes:
    """``[expires_at, channel, body]`` with the fixed head the scripts rely on."""
    return (envelope_head(expires_at) + msgpack.packb(channel, use_bin_type=True)
            + envelope_tail(body))


def read_envelope(data: bytes) -> tuple[float, str, bytes]:
    """``(expires_at, channel, body)`` of an envelope."""
    expires_at, channel, body = msgpack.unpackb(data, raw=False)
    return expires_at, channel, body


_PREAMBLE = r"""
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local LIST_TTL = tonumber(ARGV[3])
local STATS_TTL = tonumber(ARGV[4])
local TOTALS = P .. 'stats'
local evicted = {}

local function queue_of(channel)
  local bang = string.find(channel, '!', 1, true)
  if bang then return string.sub(channel, 1, bang) end
  return channel
end

local function single_reader(queue)
  return string.find(queue, '?', 1, true) ~= nil
end

-- Single-reader channels are short-lived and many: they count in the totals only.
local function count(queue, field, n)
  if not single_reader(queue) then
    local key = P .. 's:' .. queue
    redis.call('HINCRBY', key, field, n)
    redis.call('EXPIRE', key, STATS_TTL)
  end
  redis.call('HINCRBY', TOTALS, field, n)
end

local function channel_of(envelope)
  local b = string.byte(envelope, 11)
  if b >= 0xa0 and b <= 0xbf then
    return string.sub(envelope, 12, 11 + b - 0xa0)
  end
  return string.sub(envelope, 13, 12 + string.byte(envelope, 12))
end

local function expires_of(envelope)
  return (struct.unpack('>d', envelope, 3))
end

local function evict(channel)
  local key = P .. 'cg:' .. channel
  local groups = redis.call('SMEMBERS', key)
  for _, group in ipairs(groups) do
    redis.call('ZREM', P .. 'g:' .. group, channel)
    evicted[#evicted + 1] = channel
    evicted[#evicted + 1] = group
  end
  if #groups > 0 then redis.call('DEL', key) end
end

-- Drop the expired head of a queue; return its first live envelope (or nil).
local function expire(queue)
  local key = P .. 'q:' .. queue
  local dropped = 0
  local head = redis.call('LINDEX', key, 0)
  while head and expires_of(head) <= NOW do
    redis.call('LPOP', key)
    dropped = dropped + 1
    evict(channel_of(head))
    head = redis.call('LINDEX', key, 0)
  end
  if dropped > 0 then count(queue, 'messages_expired_count', dropped) end
  return head
end

local function str_header(channel)
  local n = #channel
  if n < 32 then return string.char(0xa0 + n) end
  return string.char(0xd9, n)
end

-- Push one envelope per member; members is a list of {channel, capacity}.
-- Returns how many were delivered.
local function push_many(members, head, tail)
  local queues, order = {}, {}
  for _, member in ipairs(members) do
    local queue = queue_of(member[1])
    local entry = queues[queue]
    if not entry then
      entry = {capacity = member[2], channels = {}}
      queues[queue] = entry
      order[#order + 1] = queue
    end
    entry.channels[#entry.channels + 1] = member[1]
  end
  for _, queue in ipairs(order) do expire(queue) end
  local dead = {}
  for i = 1, #evicted, 2 do dead[evicted[i]] = true end
  local delivered = 0
  for _, queue in ipairs(order) do
    local entry = queues[queue]
    local key = P .. 'q:' .. queue
    local room = entry.capacity - redis.call('LLEN', key)
    local batch, dropped = {}, 0
    for _, channel in ipairs(entry.channels) do
      if not dead[channel] then
        if room > 0 then
          batch[#batch + 1] = head .. str_header(channel) .. channel .. tail
          room = room - 1
        else
          dropped = dropped + 1
        end
      end
    end
    for first = 1, #batch, 500 do
      redis.call('RPUSH', key, unpack(batch, first, math.min(first + 499, #batch)))
    end
    if #batch > 0 then
      redis.call('PEXPIRE', key, LIST_TTL)
      count(queue, 'messages_count', #batch)
      delivered = delivered + #batch
    end
    if dropped > 0 then count(queue, 'group_send_dropped_count', dropped) end
  end
  return delivered
end

-- Trim memberships older than the cutoff; with expire_members, also drop
-- expired messages of the members' queues (evicting dead members).
local function members_of(group, cutoff, expire_members)
  local key = P .. 'g:' .. group
  redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
  local members = redis.call('ZRANGE', key, 0, -1)
  if expire_members then
    local seen = {}
    for _, channel in ipairs(members) do
      local queue = queue_of(channel)
      if not seen[queue] then
        seen[queue] = true
        expire(queue)
      end
    end
    if #evicted > 0 then members = redis.call('ZRANGE', key, 0, -1) end
  end
  return members
end
"""

# ARGV[5] queue, [6] envelope, [7] capacity -> {1 sent | 0 full, evicted}
SEND = r"""
local queue = ARGV[5]
local key = P .. 'q:' .. queue
expire(queue)
if redis.call('LLEN', key) >= tonumber(ARGV[7]) then
  count(queue, 'channel_full_count', 1)
  return {0, evicted}
end
redis.call('RPUSH', key, ARGV[6])
redis.call('PEXPIRE', key, LIST_TTL)
count(queue, 'messages_count', 1)
return {1, evicted}
"""

# ARGV[5...] queues -> {index of the queue (0: none), envelope, evicted}
# Pops the oldest live head among the queues; ties go to the earliest queue.
RECEIVE = r"""
local best, best_at = 0, nil
for i = 5, #ARGV do
  local head = expire(ARGV[i])
  if head then
    local at = expires_of(head)
    if best_at == nil or at < best_at then best, best_at = i, at end
  end
end
if best == 0 then return {0, '', evicted} end
local queue = ARGV[best]
local envelope = redis.call('LPOP', P .. 'q:' .. queue)
return {best - 4, envelope, evicted}
"""

# ARGV[5] queue, [6] channel: a message popped by BLPOP had expired -> {evicted}
DISCARD = r"""
local queue = ARGV[5]
count(queue, 'messages_expired_count', 1)
evict(ARGV[6])
expire(queue)
return {evicted}
"""

# ARGV[5] group, [6] cutoff, [7] '1' to expire member queues here -> {members, evicted}
GROUP_MEMBERS = r"""
local members = members_of(ARGV[5], ARGV[6], ARGV[7] == '1')
return {members, evicted}
"""

# Single server, one capacity for all: the whole group send in one round trip.
# ARGV[5] group, [6] cutoff, [7] capacity, [8] envelope head, [9] envelope tail
# -> {delivered, evicted}
GROUP_SEND = r"""
local capacity = tonumber(ARGV[7])
local members = {}
for _, channel in ipairs(members_of(ARGV[5], ARGV[6], false)) do
  members[#members + 1] = {channel, capacity}
end
local delivered = push_many(members, ARGV[8], ARGV[9])
return {delivered, evicted}
"""

# ARGV[5] envelope head, [6] envelope tail, [7...] channel, capacity pairs
# -> {delivered, evicted}
PUSH_MANY = r"""
local members = {}
for i = 7, #ARGV, 2 do
  members[#members + 1] = {ARGV[i], tonumber(ARGV[i + 1])}
end
local delivered = push_many(members, ARGV[5], ARGV[6])
return {delivered, evicted}
"""

# ARGV[5...] queues -> {messages pending, oldest expiry ('' if none), evicted}
EXPIRE_QUEUES = r"""
local pending, oldest = 0, nil
for i = 5, #ARGV do
  local head = expire(ARGV[i])
  if head then
    pending = pending + redis.call('LLEN', P .. 'q:' .. ARGV[i])
    local at = expires_of(head)
    if oldest == nil or at < oldest then oldest = at end
  end
end
return {pending, oldest and string.format('%.17g', oldest) or '', evicted}
"""

# ARGV[5] queue -> {counters (flat hash), pending, oldest expiry or '', evicted}
CHANNEL_STATS = r"""
local queue = ARGV[5]
local head = expire(queue)
local pending = redis.call('LLEN', P .. 'q:' .. queue)
local counters = redis.call('HGETALL', P .. 's:' .. queue)
local oldest = ''
if head then oldest = string.format('%.17g', expires_of(head)) end
return {counters, pending, oldest, evicted}
"""

# The process registry: a hash per kind, <prefix>reg:<kind>, of name -> 8-byte
# big-endian expiry followed by the encoded info.
# ARGV[5] kind, [6] name, [7] value, [8] key TTL in ms (only ever lengthened)
REGISTER = r"""
local key = P .. 'reg:' .. ARGV[5]
redis.call('HSET', key, ARGV[6], ARGV[7])
if redis.call('PTTL', key) < tonumber(ARGV[8]) then redis.call('PEXPIRE', key, ARGV[8]) end
return 1
"""

# ARGV[5] kind -> flat {name, value, ...} of live entries; expired ones are deleted
LIVE_PROCESSES = r"""
local key = P .. 'reg:' .. ARGV[5]
local flat = redis.call('HGETALL', key)
local live = {}
for i = 1, #flat, 2 do
  if struct.unpack('>d', flat[i + 1], 1) <= NOW then
    redis.call('HDEL', key, flat[i])
  else
    live[#live + 1] = flat[i]
    live[#live + 1] = flat[i + 1]
  end
end
return live
"""


@dataclass(frozen=True)
class Script:
    """A Lua script (with the shared preamble) and its SHA1 for EVALSHA."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


def _script(name: str, body: str) -> Script:
    return Script(name, _PREAMBLE + body)


SCRIPTS = {
    name: _script(name, body)
    for name, body in {
        "send": SEND,
        "receive": RECEIVE,
        "discard": DISCARD,
        "group_members": GROUP_MEMBERS,
        "group_send": GROUP_SEND,
        "push_many": PUSH_MANY,
        "expire_queues": EXPIRE_QUEUES,
        "channel_stats": CHANNEL_STATS,
        "register": REGISTER,
        "live_processes": LIVE_PROCESSES,
    }.items()
}
