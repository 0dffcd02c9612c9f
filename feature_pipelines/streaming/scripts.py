"""The consumer's Lua script: a chunk of stream entries, each entry's whole effect applied at most once.

`APPLY_CHUNK` takes a chunk of entries in stream order (one EVALSHA a chunk, not one an entry:
the per-call cost of a script dominated the consumer's Redis time) and, for each entry in turn,
checks that it was not already processed (entry marker), then either dead-letters it (the raw
rules rejected it: it comes with its rule, action and reason) or applies it: judges a
re-delivered event id (identical: the `*_redelivered` rule; other values: the uniqueness rule,
the first delivery wins), judges lateness against the table's watermark per view, folds the event
into each view's tile (`TilePlan.ops`), keeps it among the tile's events, sets both keys' retention
(`StreamingSpec.retention`, a PEXPIRE on every write, so a live stream's memory is bounded), and
advances the watermark. Each entry sees the watermark the entries before it left, as if each were
its own script, and gets its own outcome, returned in order.

Redis runs a script without interleaving any other command, and a script's writes reach the
append-only file together, so after a crash or a restart a chunk's effect (and so each entry's) is
all there or not at all; the XACK comes after, so an entry whose effect is missing is still pending
and is processed again, and one whose effect is there is recognised by its marker and only acked.
A chunk blocks other clients while it runs (a few milliseconds for a few hundred entries): the
consumer's `chunk` bounds that pause.

KEYS: the watermark hash, the dead-letter stream, the stats hash, then each entry's own keys from
its index `k`: its entry marker, and for an applied event its event-id marker and, per view it
feeds, the tile and the tile's events. ARGV: the markers' TTL (ms); the JSON of the chunk's
constants (table, the redelivered and conflict rules, per view its name, lateness bound in
microseconds and retention in milliseconds); the JSON list of entries. Every number Redis stores
is passed as text, so no float formatting happens in Lua.
"""

from __future__ import annotations

APPLY_CHUNK = """
local ttl = ARGV[1]
local c = cjson.decode(ARGV[2])
local entries = cjson.decode(ARGV[3])
local mark = redis.call('HGET', KEYS[1], c.table)
local watermark = mark and tonumber(mark) or nil
local advanced = false
local counts = {}
local function count(field) counts[field] = (counts[field] or 0) + 1 end
local function dead(e, rule, action, reason)
  redis.call('XADD', KEYS[2], '*', 'table', c.table, 'rule', rule, 'action', action, 'event_id', e.id,
             'entry_id', e.e, 'reason', reason, 'payload', e.p)
  count(rule)
end
local function fold(tile, ops)
  for _, op in ipairs(ops) do
    local kind, field, arg = op[1], op[2], op[3]
    if kind == 'incr' then
      redis.call('HINCRBY', tile, field, arg)
    elseif kind == 'min' or kind == 'max' then
      local current = redis.call('HGET', tile, field)
      if not current or (kind == 'min' and tonumber(arg) < tonumber(current))
         or (kind == 'max' and tonumber(arg) > tonumber(current)) then
        redis.call('HSET', tile, field, arg)
      end
    elseif kind == 'latest' then
      local current = redis.call('HGET', tile, field)
      local new = cjson.decode(arg)[1]
      local replace = not current
      if current then
        local old = cjson.decode(current)[1]
        for j = 1, 3 do
          if new[j] ~= old[j] then replace = new[j] > old[j]; break end
        end
      end
      if replace then redis.call('HSET', tile, field, arg) end
    end
  end
end
local function apply(e)
  local k = e.k
  if redis.call('EXISTS', KEYS[k]) == 1 then return 'retry' end
  redis.call('SET', KEYS[k], '1', 'PX', ttl)
  if e.r then
    dead(e, e.r[1], e.r[2], e.r[3])
    return 'rejected'
  end
  local seen = redis.call('GET', KEYS[k + 1])
  if seen then
    if seen == e.h then
      dead(e, c.redelivered_rule, 'drop', 'identical copy of an event already applied')
      return c.redelivered_rule
    end
    dead(e, c.conflict_rule, 'drop', 'event id already applied with other values; the first delivery wins')
    return c.conflict_rule
  end
  redis.call('SET', KEYS[k + 1], e.h, 'PX', ttl)
  local known = tonumber(e.t)
  local applied = 0
  for i, v in ipairs(e.v) do
    local view = c.views[v[1]]
    local tile, events = KEYS[k + 2 * i], KEYS[k + 1 + 2 * i]
    local behind = watermark and (watermark - known) or 0
    if behind > tonumber(view.lateness_us) then
      dead(e, 'stream_max_lateness:' .. view.name, 'drop',
           'known at ' .. e.t .. ' us, ' .. behind .. ' us behind the watermark ' .. mark ..
           ' us, over the lateness bound of view ' .. view.name .. ' (' .. view.lateness_us .. ' us)')
    else
      fold(tile, v[2])
      redis.call('HSET', events, e.id, v[3])
      redis.call('PEXPIRE', tile, view.retention_ms)
      redis.call('PEXPIRE', events, view.retention_ms)
      applied = applied + 1
    end
  end
  if not watermark or known > watermark then
    watermark, mark, advanced = known, e.t, true
  end
  if applied > 0 then count('applied') end
  return 'applied'
end
local outcomes = {}
for i, e in ipairs(entries) do outcomes[i] = apply(e) end
if advanced then redis.call('HSET', KEYS[1], c.table, mark) end
for field, n in pairs(counts) do redis.call('HINCRBY', KEYS[3], field, n) end
return outcomes
"""
