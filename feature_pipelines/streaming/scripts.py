"""The consumer's Lua scripts: one stream entry's whole effect, applied atomically and at most once.

`APPLY` writes an accepted event: in one script it checks that the entry was not already
processed (entry marker), judges a re-delivered event id (identical: the `*_redelivered` rule;
other values: the uniqueness rule, the first delivery wins), judges lateness against the table's
watermark per view, folds the event into each view's tile (`TilePlan.ops`) and keeps it among
the tile's events, then advances the watermark. `REJECT` dead-letters an event the raw rules
rejected. Redis runs a script without interleaving any other command, and a script's writes reach
the append-only file together, so after a crash or a restart an entry's effect is all there or
not at all; the XACK comes after, so an entry whose effect is missing is still pending and is
processed again, and one whose effect is there is recognised by its marker and only acked.
"""

from __future__ import annotations

APPLY = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'retry' end
local ttl = ARGV[4]
redis.call('SET', KEYS[1], '1', 'PX', ttl)
local info = cjson.decode(ARGV[5])
local function dead(rule, action, reason)
  redis.call('XADD', KEYS[4], '*', 'table', info.table, 'rule', rule, 'action', action, 'event_id', info.event_id,
             'entry_id', ARGV[1], 'reason', reason, 'payload', info.payload)
  redis.call('HINCRBY', KEYS[5], rule, 1)
end
local seen = redis.call('GET', KEYS[2])
if seen then
  if seen == ARGV[2] then
    dead(info.redelivered_rule, 'drop', 'identical copy of an event already applied')
    return info.redelivered_rule
  end
  dead(info.conflict_rule, 'drop', 'event id already applied with other values; the first delivery wins')
  return info.conflict_rule
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
local known = tonumber(ARGV[3])
local mark = redis.call('HGET', KEYS[3], info.table)
local watermark = mark and tonumber(mark) or nil
local views = cjson.decode(ARGV[6])
local applied = 0
for i, view in ipairs(views) do
  local tile, events = KEYS[4 + 2 * i], KEYS[5 + 2 * i]
  local behind = watermark and (watermark - known) or 0
  if behind > tonumber(view.lateness_us) then
    dead('stream_max_lateness:' .. view.name, 'drop',
         'known at ' .. ARGV[3] .. ' us, ' .. behind .. ' us behind the watermark ' .. mark ..
         ' us, over the lateness bound of view ' .. view.name .. ' (' .. view.lateness_us .. ' us)')
  else
    for _, op in ipairs(view.ops) do
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
    redis.call('HSET', events, info.event_id, view.record)
    applied = applied + 1
  end
end
if not watermark or known > watermark then redis.call('HSET', KEYS[3], info.table, ARGV[3]) end
if applied > 0 then redis.call('HINCRBY', KEYS[5], 'applied', 1) end
return 'applied'
"""

REJECT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'retry' end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'table', ARGV[3], 'rule', ARGV[4], 'action', ARGV[5], 'event_id', ARGV[6],
           'entry_id', ARGV[1], 'reason', ARGV[7], 'payload', ARGV[8])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
return 'rejected'
"""
