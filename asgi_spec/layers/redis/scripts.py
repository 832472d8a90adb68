"""The Lua scripts of the Redis layer, and the key and envelope layout they share.

How this works: every queue is a Redis list ``<prefix>q:<queue>`` of
envelopes. An envelope is a msgpack array ``[expires_at, channel, body]``
written with a fixed head -- ``0x93`` (array of 3), ``0xcb`` (float64) and the
8-byte big-endian expiry -- so Lua reads the expiry with ``struct.unpack`` and
the channel name from the str header at byte 11 without decoding the body.

Each script receives the same first four arguments: the key prefix, ``now``
from the layer's clock (never Redis ``TIME``), the list TTL in ms and the
counter TTL in s. Before a script looks at a queue it drops the expired
messages at its head (a send looks only when the queue is full or has items
in flight: otherwise dropping could not change its answer), counts them, and
evicts their channels from every group through the reverse index
``<prefix>cg:<channel>`` (a set of group names). Groups are sorted sets
``<prefix>g:<group>`` of channel -> add time.
The evicted ``(channel, group)`` pairs are returned too, so that with several
shards the layer removes the member from a group living on another server.

Counters: ``<prefix>s:<queue>`` (a hash per queue, with a TTL) and
``<prefix>stats`` (this server's totals). Single-reader (``?``) channels are
many and short-lived, so they count in the totals only.

Key TTLs are garbage collection only, in real time with generous margins;
every expiry decision is taken by comparing envelopes with ``now``.

How a script is called: on Redis >= 7.0 every script is a function of one
library (``LIBRARY``, loaded with ``FUNCTION LOAD`` on first use and again
whenever ``FCALL`` says it is missing; ``FCALL``), so its state and helpers
are defined once per load rather than on every call; the library's name is a
hash of its code, so layers of different versions sharing a server never call
each other's functions. Where the server has no functions or refuses the
library, the same text runs as a script (state, helpers and body) through
``EVALSHA``/``EVAL``.

Cheap looks: a script reads a queue's head, and its due in-flight items, only
if there can be any. A send reads ``LLEN`` and ``ZCARD`` (which capacity needs
anyway) first; a script over several queues starts with one ``EXISTS`` over
all their lists and in-flight sets, and once every key it counted is a list
whose head it has read, the other lists are empty and nothing is in flight
(an empty key does not exist in Redis, so nothing in flight is ever skipped).

At-least-once queues (the ``acks`` extension), per normal queue ``Q``:

* ``<prefix>f:Q`` -- sorted set of in-flight deliveries, token -> deadline;
  ``<prefix>fd:Q`` -- hash, token -> the in-flight *item*.
* An item is an envelope extended to a msgpack array of 5, ``[expires_at,
  channel, body, order, deliveries]``: head byte ``0x95`` instead of ``0x93``
  (so the fixed offsets above still hold), then two float64s at fixed offsets
  from the end. ``order`` comes from ``<prefix>fn:Q`` (INCR) at the first
  delivery and never changes; ``deliveries`` grows by one per delivery.
* A receive that wants a receipt pops the head *inside the script* and moves
  it, in the same script, into ``f:Q``/``fd:Q`` under a token the layer made
  up, with deadline ``now + ack_timeout``. ``ack`` removes it if the deadline
  has not passed. Every script that looks at ``Q`` first moves its due
  in-flight items back to the list head: the redelivered items always form a
  block at the head, which is re-sorted by ``order`` each time one joins, so
  redeliveries keep their send order and come before newer messages.
* Blocking without ever letting a message leave Redis outside a script:
  ``<prefix>w:Q`` is a list of *bells*, kept exactly as long as ``q:Q`` by
  the scripts that push to, pop from or requeue into an at-least-once queue
  (the layer says which queues are, per call). A blocked receiver ``BLPOP``s
  the bell list of an at-least-once queue (the message list of any other):
  a popped bell is only a wake-up, and the message is then taken by the
  receive script, registered in flight atomically. A bell lost with its
  connection costs a wake-up, never a message. Every receive that treats a
  queue as at-least-once adds it to the set ``<prefix>alo`` (a receiver
  always pops once before it blocks), and every push to a queue in that set
  rings, so senders need not share the receivers' options.

In-flight items and a queue's capacity: in-flight items count against it
(``LLEN + ZCARD``), and are not pending.

Scheduled messages (the ``delay`` extension), per server: ``<prefix>sched``
(sorted set, id -> due time), ``<prefix>sched:m`` (hash, id -> a 5-byte
head ``[bell flag, capacity]`` + the envelope, stamped with due time +
expiry) and ``<prefix>sched:n`` (the id counter; ids are zero-padded so
ties keep scheduling order). A message is scheduled on the server of its
queue, so ``DELIVER`` moves it into the queue atomically.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import msgpack

from asgi_spec.codec import pack

#: A msgpack array of 3 whose first item is a float64.
ENVELOPE_HEAD = b"\x93\xcb"


def envelope_head(expires_at: float) -> bytes:
    """The fixed first 10 bytes of an envelope expiring at ``expires_at``."""
    return ENVELOPE_HEAD + struct.pack(">d", float(expires_at))


def envelope_tail(body: bytes) -> bytes:
    """The body as a msgpack bin, the last item of an envelope."""
    return pack(body)


def make_envelope(expires_at: float, channel: str, body: bytes) -> bytes:
    """``[expires_at, channel, body]`` with the fixed head the scripts rely on."""
    return envelope_head(expires_at) + pack(channel) + pack(body)


def read_envelope(data: bytes) -> tuple[float, str, bytes]:
    """``(expires_at, channel, body)`` of an envelope (or of an in-flight item)."""
    items = msgpack.unpackb(data, raw=False)
    return items[0], items[1], items[2]


def schedule_record(bell: bool, capacity: int, envelope: bytes) -> bytes:
    """A scheduled message as ``DELIVER`` reads it: flags, capacity, envelope."""
    return struct.pack(">BI", 1 if bell else 0, capacity) + envelope


# What every call starts from, read by the helpers: _STATE declares it, _BEGIN
# sets it from ARGV[1..4] at the start of each call.
_STATE = r"""
local P, NOW, LIST_TTL, STATS_TTL, TOTALS, evicted
"""

_BEGIN = r"""
P, NOW, LIST_TTL, STATS_TTL = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
TOTALS, evicted = P .. 'stats', {}
"""

_HELPERS = r"""
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

local REDELIVERED = 0x95
local FLOAT64 = '\203'  -- 0xcb (no library calls while a Redis 7 library loads)

local function normal(queue)
  return string.find(queue, '[%?!]') == nil
end

-- Items stored in the queue list or in flight: messages plus what the queue holds in flight.
local function held(queue)
  local n = redis.call('LLEN', P .. 'q:' .. queue)
  if normal(queue) then n = n + redis.call('ZCARD', P .. 'f:' .. queue) end
  return n
end

-- Receivers that treat a queue as at-least-once list it in <prefix>alo, so that
-- every sender rings its bells, whatever the sender's own options say.
local function rings(queue)
  return normal(queue) and redis.call('SISMEMBER', P .. 'alo', queue) == 1
end

local function order_of(item)
  return (struct.unpack('>d', item, #item - 16))
end

local function deliveries_of(item)
  return (struct.unpack('>d', item, #item - 7))
end

-- Keep the bell list of an at-least-once queue no longer than the queue;
-- with top_up, exactly as long (so every waiting message can wake a receiver).
-- qlen: the queue's length if the caller has just learnt it.
local function sync_bells(queue, top_up, qlen)
  qlen = qlen or redis.call('LLEN', P .. 'q:' .. queue)
  local wkey = P .. 'w:' .. queue
  local wlen = redis.call('LLEN', wkey)
  if wlen > qlen then
    if qlen == 0 then redis.call('DEL', wkey) else redis.call('LTRIM', wkey, 0, qlen - 1) end
  elseif top_up and wlen < qlen then
    local bells = {}
    for i = 1, math.min(qlen - wlen, 500) do bells[i] = '1' end
    redis.call('RPUSH', wkey, unpack(bells))
    redis.call('PEXPIRE', wkey, LIST_TTL)
  end
end

-- Move the in-flight items of a queue whose deadline passed back to the head;
-- true if there were any (the head may have changed).
local function requeue(queue)
  local fkey = P .. 'f:' .. queue
  local due = redis.call('ZRANGEBYSCORE', fkey, '-inf', NOW, 'LIMIT', 0, 500)
  if #due == 0 then return false end
  local dkey = P .. 'fd:' .. queue
  local items = redis.call('HMGET', dkey, unpack(due))
  redis.call('ZREM', fkey, unpack(due))
  redis.call('HDEL', dkey, unpack(due))
  local qkey = P .. 'q:' .. queue
  local block = {}
  for _, item in ipairs(items) do
    if item then block[#block + 1] = item end
  end
  local head = redis.call('LINDEX', qkey, 0)
  while head and string.byte(head, 1) == REDELIVERED do
    block[#block + 1] = redis.call('LPOP', qkey)
    head = redis.call('LINDEX', qkey, 0)
  end
  table.sort(block, function(a, b) return order_of(a) < order_of(b) end)
  local batch = {}
  for i = #block, 1, -1 do
    batch[#batch + 1] = block[i]
    if #batch == 500 or i == 1 then
      redis.call('LPUSH', qkey, unpack(batch))
      batch = {}
    end
  end
  redis.call('PEXPIRE', qkey, LIST_TTL)
  sync_bells(queue, true)
  return true
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

-- Requeue due in-flight items, drop the expired head of a queue; return its
-- first live envelope (or false), how many expired messages it dropped, and
-- whether in-flight items came back. What the caller has just learnt saves
-- calls: grounded, the queue has nothing in flight (no requeue); head, the
-- list's head (false: the list is empty).
local function expire(queue, grounded, head)
  local moved = not grounded and normal(queue) and requeue(queue)
  if moved then head = nil end
  local key = P .. 'q:' .. queue
  local dropped = 0
  if head == nil then head = redis.call('LINDEX', key, 0) end
  while head and expires_of(head) <= NOW do
    redis.call('LPOP', key)
    dropped = dropped + 1
    evict(channel_of(head))
    head = redis.call('LINDEX', key, 0)
  end
  if dropped > 0 then count(queue, 'messages_expired_count', dropped) end
  return head, dropped, moved
end

-- expire() for several queues; returns their heads by position (false: none),
-- and true if none of them has anything in flight. One EXISTS over their lists
-- and in-flight sets first: once every key it found is accounted for (a list
-- with a head), the other lists are empty and nothing is in flight, so an
-- empty queue costs no call of its own.
local function expire_many(queues)
  local keys, found = {}, 0
  for _, queue in ipairs(queues) do
    keys[#keys + 1] = P .. 'q:' .. queue
    if normal(queue) then keys[#keys + 1] = P .. 'f:' .. queue end
  end
  for first = 1, #keys, 500 do
    found = found + redis.call('EXISTS', unpack(keys, first, math.min(first + 499, #keys)))
  end
  local heads, seen = {}, {}
  for i, queue in ipairs(queues) do
    if seen[queue] then
      heads[i] = nil  -- listed twice: read it again (the first expire may change it)
    elseif found > 0 then
      heads[i] = redis.call('LINDEX', P .. 'q:' .. queue, 0)
      if heads[i] then found = found - 1 end
    else
      heads[i] = false
    end
    seen[queue] = true
  end
  local grounded = found == 0  -- the keys left over are in-flight sets
  for i, queue in ipairs(queues) do heads[i] = expire(queue, grounded, heads[i]) end
  return heads, grounded
end

local function str_header(channel)
  local n = #channel
  if n < 32 then return string.char(0xa0 + n) end
  return string.char(0xd9, n)
end

-- Push one envelope per member; members is a list of {channel, capacity, bell}
-- (bell: the queue is at-least-once). Returns how many were delivered.
local function push_many(members, head, tail)
  local queues, order = {}, {}
  for _, member in ipairs(members) do
    local queue = queue_of(member[1])
    local entry = queues[queue]
    if not entry then
      entry = {capacity = member[2], bell = member[3], channels = {}}
      queues[queue] = entry
      order[#order + 1] = queue
    end
    entry.channels[#entry.channels + 1] = member[1]
  end
  expire_many(order)
  local dead = {}
  for i = 1, #evicted, 2 do dead[evicted[i]] = true end
  local delivered = 0
  for _, queue in ipairs(order) do
    local entry = queues[queue]
    local key = P .. 'q:' .. queue
    local room = entry.capacity - held(queue)
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
      if entry.bell or rings(queue) then sync_bells(queue, true) end
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
    local seen, queues = {}, {}
    for _, channel in ipairs(members) do
      local queue = queue_of(channel)
      if not seen[queue] then
        seen[queue] = true
        queues[#queues + 1] = queue
      end
    end
    expire_many(queues)
    if #evicted > 0 then members = redis.call('ZRANGE', key, 0, -1) end
  end
  return members
end
"""

# Sends, one message or many in one call, in order. A queue's head is looked at only
# when that could change the answer (the queue is at capacity, or holds items in
# flight): with room to spare an expired head is left to the next look that needs it
# (a receive, a group send, a send that finds the queue full). The work is shared per
# queue: one length read, at most one look at the head, one RPUSH, one PEXPIRE and
# one counter update.
# ARGV[5...] quadruples: queue, envelope, capacity, '1' if at-least-once (ring)
# -> {{1 sent | 0 full, per message}, evicted}
SEND = r"""
local queues, order, outcomes = {}, {}, {}
for i = 5, #ARGV, 4 do
  local queue, capacity = ARGV[i], tonumber(ARGV[i + 2])
  local entry = queues[queue]
  if not entry then
    local pending = redis.call('LLEN', P .. 'q:' .. queue)
    local flying = 0
    if normal(queue) then flying = redis.call('ZCARD', P .. 'f:' .. queue) end
    entry = {held = pending + flying, pending = pending, flying = flying, looked = false,
             batch = {}, full = 0, ring = false}
    queues[queue] = entry
    order[#order + 1] = queue
  end
  if not entry.looked and (entry.flying > 0 or entry.held >= capacity) then
    entry.looked = true
    local head = nil
    if entry.pending == 0 then head = false end
    local _, dropped, moved = expire(queue, entry.flying == 0, head)
    entry.held = entry.held - dropped
    if moved then entry.held = held(queue) + #entry.batch end
  end
  if entry.held >= capacity then
    entry.full = entry.full + 1
    outcomes[#outcomes + 1] = 0
  else
    entry.batch[#entry.batch + 1] = ARGV[i + 1]
    entry.held = entry.held + 1
    if ARGV[i + 3] == '1' then entry.ring = true end
    outcomes[#outcomes + 1] = 1
  end
end
for _, queue in ipairs(order) do
  local entry = queues[queue]
  local batch = entry.batch
  if #batch > 0 then
    local key, qlen = P .. 'q:' .. queue, 0
    for first = 1, #batch, 500 do
      qlen = redis.call('RPUSH', key, unpack(batch, first, math.min(first + 499, #batch)))
    end
    redis.call('PEXPIRE', key, LIST_TTL)
    count(queue, 'messages_count', #batch)
    if entry.ring or rings(queue) then sync_bells(queue, true, qlen) end
  end
  if entry.full > 0 then count(queue, 'channel_full_count', entry.full) end
end
return {outcomes, evicted}
"""

# ARGV[5] token, [6] ack deadline, [7] in-flight key TTL (ms), [8...] queue, mode
# pairs; mode '0' plain, '1' at-least-once (keep its bells in step), '2'
# at-least-once and put the popped message in flight under the token.
# -> {index of the queue (0: none), envelope or item, evicted, deliveries (0: not in flight)}
# Pops the oldest live head among the queues; ties go to the earliest queue.
RECEIVE = r"""
local registered = false
for i = 8, #ARGV, 2 do
  if ARGV[i + 1] ~= '0' then
    redis.call('SADD', P .. 'alo', ARGV[i])
    registered = true
  end
end
if registered then redis.call('EXPIRE', P .. 'alo', STATS_TTL) end
local queues = {}
for i = 8, #ARGV, 2 do queues[#queues + 1] = ARGV[i] end
local heads = expire_many(queues)
local best, best_at = 0, nil
for j = 1, #queues do
  local head = heads[j]
  if head then
    local at = expires_of(head)
    if best_at == nil or at < best_at then best, best_at = 6 + 2 * j, at end
  end
end
if best == 0 then  -- every list is empty now
  for i = 8, #ARGV, 2 do
    if ARGV[i + 1] ~= '0' then sync_bells(ARGV[i], false, 0) end
  end
  return {0, '', evicted, 0}
end
local queue, mode = ARGV[best], ARGV[best + 1]
local item = redis.call('LPOP', P .. 'q:' .. queue)
local deliveries = 0
if mode == '2' then
  if string.byte(item, 1) == REDELIVERED then
    deliveries = deliveries_of(item) + 1
    item = string.sub(item, 1, -9) .. struct.pack('>d', deliveries)
  else
    deliveries = 1
    local nkey = P .. 'fn:' .. queue
    local order = redis.call('INCR', nkey)
    redis.call('EXPIRE', nkey, STATS_TTL)
    item = string.char(REDELIVERED) .. string.sub(item, 2)
      .. FLOAT64 .. struct.pack('>d', order) .. FLOAT64 .. struct.pack('>d', 1)
  end
  local fkey, dkey = P .. 'f:' .. queue, P .. 'fd:' .. queue
  redis.call('ZADD', fkey, ARGV[6], ARGV[5])
  redis.call('HSET', dkey, ARGV[5], item)
  redis.call('PEXPIRE', fkey, ARGV[7])
  redis.call('PEXPIRE', dkey, ARGV[7])
end
if mode ~= '0' then sync_bells(queue, false) end
return {(best - 6) / 2, item, evicted, deliveries}
"""

# ARGV[5] queue, [6] token -> {1 acknowledged | 0 not, evicted}
ACK = r"""
local queue, token = ARGV[5], ARGV[6]
local fkey, dkey = P .. 'f:' .. queue, P .. 'fd:' .. queue
local deadline = redis.call('ZSCORE', fkey, token)
if not deadline then return {0, evicted} end
if tonumber(deadline) <= NOW then
  expire(queue)
  return {0, evicted}
end
local item = redis.call('HGET', dkey, token)
redis.call('ZREM', fkey, token)
redis.call('HDEL', dkey, token)
if item and expires_of(item) <= NOW then
  count(queue, 'messages_expired_count', 1)
  evict(channel_of(item))
  return {0, evicted}
end
return {1, evicted}
"""

# ARGV[5...] queues: top their bell lists up (a wake-up popped by a losing wait).
RING = r"""
for i = 5, #ARGV do sync_bells(ARGV[i], true) end
return 1
"""

# ARGV[5] due time, [6] record (schedule_record), [7] key TTL in ms (only lengthened)
SCHEDULE = r"""
local zkey, mkey, nkey = P .. 'sched', P .. 'sched:m', P .. 'sched:n'
local id = string.format('%016d', redis.call('INCR', nkey))
redis.call('ZADD', zkey, ARGV[5], id)
redis.call('HSET', mkey, id, ARGV[6])
for _, key in ipairs({zkey, mkey, nkey}) do
  if redis.call('PTTL', key) < tonumber(ARGV[7]) then redis.call('PEXPIRE', key, ARGV[7]) end
end
return 1
"""

# ARGV[5] limit -> {moved, evicted}
# Moves due scheduled messages into their queues, earliest first; one whose
# queue is full stays, one past its expiry is dropped and counted.
DELIVER = r"""
local zkey, mkey = P .. 'sched', P .. 'sched:m'
local limit = tonumber(ARGV[5])
local moved, skipped = 0, 0
while moved < limit do
  local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', NOW, 'LIMIT', skipped, 100)
  if #due == 0 then break end
  for _, id in ipairs(due) do
    if moved >= limit then break end
    local record = redis.call('HGET', mkey, id)
    local done = true
    if record then
      local bell, capacity = struct.unpack('>BI4', record)
      local envelope = string.sub(record, 6)
      local channel = channel_of(envelope)
      local queue = queue_of(channel)
      if expires_of(envelope) <= NOW then
        count(queue, 'messages_expired_count', 1)
      else
        expire(queue)
        if held(queue) >= capacity then
          done = false
        else
          local key = P .. 'q:' .. queue
          redis.call('RPUSH', key, envelope)
          redis.call('PEXPIRE', key, LIST_TTL)
          count(queue, 'messages_count', 1)
          if bell == 1 or rings(queue) then sync_bells(queue, true) end
          moved = moved + 1
        end
      end
    end
    if done then
      redis.call('ZREM', zkey, id)
      redis.call('HDEL', mkey, id)
    else
      skipped = skipped + 1
    end
  end
end
return {moved, evicted}
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

# Single server, no capacity rules: the whole group send in one round trip.
# ARGV[5] group, [6] cutoff, [7] capacity, [8] envelope head, [9] envelope tail,
# [10] capacity of process-specific queues -> {delivered, evicted}
GROUP_SEND = r"""
local capacity, process_capacity = tonumber(ARGV[7]), tonumber(ARGV[10])
local members = {}
for _, channel in ipairs(members_of(ARGV[5], ARGV[6], false)) do
  local cap = capacity
  if string.find(channel, '!', 1, true) then cap = process_capacity end
  members[#members + 1] = {channel, cap, false}
end
local delivered = push_many(members, ARGV[8], ARGV[9])
return {delivered, evicted}
"""

# Up to ARGV[5] live messages from the queues ARGV[6...] (none at-least-once),
# oldest first, as receive would take them one by one -> {envelopes, evicted}
RECEIVE_MANY = r"""
local max = tonumber(ARGV[5])
local queues, out = {}, {}
for i = 6, #ARGV do queues[#queues + 1] = ARGV[i] end
-- (nothing enters flight here: grounded stays true for the whole script)
local heads, grounded = expire_many(queues)
while #out < max do
  local best, best_at = nil, nil
  for j = 1, #queues do
    local head = heads[j]
    if head then
      local at = expires_of(head)
      if best_at == nil or at < best_at then best, best_at = j, at end
    end
  end
  if best == nil then break end
  out[#out + 1] = redis.call('LPOP', P .. 'q:' .. queues[best])
  heads[best] = expire(queues[best], grounded)
end
return {out, evicted}
"""

# ARGV[5] envelope head, [6] envelope tail, [7...] channel, capacity, bell
# ('1': at-least-once) triples -> {delivered, evicted}
PUSH_MANY = r"""
local members = {}
for i = 7, #ARGV, 3 do
  members[#members + 1] = {ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2] == '1'}
end
local delivered = push_many(members, ARGV[5], ARGV[6])
return {delivered, evicted}
"""

# ARGV[5...] queues -> {messages pending, oldest expiry ('' if none), evicted}
EXPIRE_QUEUES = r"""
local pending, oldest = 0, nil
local queues = {}
for i = 5, #ARGV do queues[#queues + 1] = ARGV[i] end
local heads = expire_many(queues)
for i = 5, #ARGV do
  local head = heads[i - 4]
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


_BODIES = {
    "send": SEND,
    "receive": RECEIVE,
    "receive_many": RECEIVE_MANY,
    "ack": ACK,
    "ring": RING,
    "schedule": SCHEDULE,
    "deliver": DELIVER,
    "discard": DISCARD,
    "group_members": GROUP_MEMBERS,
    "group_send": GROUP_SEND,
    "push_many": PUSH_MANY,
    "expire_queues": EXPIRE_QUEUES,
    "channel_stats": CHANNEL_STATS,
    "register": REGISTER,
    "live_processes": LIVE_PROCESSES,
}


def _library_code(bodies: dict[str, str]) -> str:
    """Every script as a function of one Redis 7 library (``{lib}``: its name): the
    state and helpers are defined once, when the library loads, not on every call."""
    functions = "".join(
        f"\nredis.register_function('{{lib}}_{name}', function(KEYS, ARGV)\n"
        f"{_BEGIN}{body}\nend)\n"
        for name, body in bodies.items())
    return _STATE + _HELPERS + functions


_CODE = _library_code(_BODIES)
#: The library's name changes with its code, so layers of different versions
#: sharing a server never call each other's functions.
LIBRARY_NAME = "asgi_spec_" + hashlib.sha1(_CODE.encode()).hexdigest()[:16]
#: ``FUNCTION LOAD`` text of the library.
LIBRARY = f"#!lua name={LIBRARY_NAME}\n" + _CODE.replace("{lib}", LIBRARY_NAME)


@dataclass(frozen=True)
class Script:
    """A Lua script: its source (state, helpers, body) and SHA1 for ``EVAL``/``EVALSHA``,
    and the name of the same script as a function of ``LIBRARY`` for ``FCALL``."""

    name: str
    source: str
    sha: str = field(init=False)
    function: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())
        object.__setattr__(self, "function", f"{LIBRARY_NAME}_{self.name}")


SCRIPTS = {name: Script(name, _STATE + _BEGIN + _HELPERS + body)
           for name, body in _BODIES.items()}
