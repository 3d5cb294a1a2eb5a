#!lua flags=allow-oom
-- repair: make one budget's keys agree again after something outside aiobudget damaged
-- them (a DEL, an eviction, a partial restore, a hand edit). n is 1, check '-'. It reads
-- everything, keeps what is readable, and rebuilds the rest:
--   * the limits: the stored ones if readable, else `given` (none given: NEEDLIMITS);
--   * spent: the stored counters if readable (and not `zero`), else 0;
--   * reserved (and the count of leases held): recounted from the leases still held; a
--     lease without an expiry gets `lease ttl` from now, an expiry without a lease goes,
--     an unreadable lease goes;
--   * the announced status: kept if readable, else what the counters now say;
--   * a period's window: kept if readable, else dropped (the next operation starts the
--     current window, with what was spent carried over).
--   ARGV[A]          a spec to use when the stored limits are missing or unreadable, or ''
--   ARGV[A+1]        '1' to set spent to 0 (a forced reset)
--   ARGV[A+2]        lease time to live, ms, for leases whose expiry was lost
--   ARGV[A+3]        '1' for a dry run: say what would change, change nothing
-- Reply: {'OK', code, change, change, ...} (each change a sentence)
--     or {'NOBUDGET', 1} (no key at all: nothing to repair)
--     or {'NEEDLIMITS', 1} / {'LIMITS', 1, spec} (nothing changed).

local given = ARGV[A]
local fresh = nil
if given ~= '' then fresh = spec(given) or fail('bad limits ' .. given) end
local zero_spent = ARGV[A + 1] == '1'
local ttl = ms_arg(ARGV[A + 2])
local dry = ARGV[A + 3] == '1'
local b, l, e = KEYS[2], KEYS[3], KEYS[4]
local got = redis.call('HMGET', b, 'spec', 'spent', 'reserved', 'peak', 'held', 'window')
local changes = {}
local function change(text) changes[#changes + 1] = text end

if not got[1] and redis.call('EXISTS', b, l, e) == 0 then return {'NOBUDGET', 1} end
local v = spec(got[1])
if v then
  v.spec = got[1]
  if fresh and dimstr(fresh) ~= dimstr(v) then return {'LIMITS', 1, got[1]} end
else
  if not fresh then return {'NEEDLIMITS', 1} end
  v = fresh
  v.spec = given
  change(got[1] and 'its unreadable limits were replaced by ' .. given
    or 'its lost state was created again with limits ' .. given)
end
local count = #v.dims

v.spent = list(got[2], count)
if zero_spent then
  local nonzero = not v.spent
  for k = 1, count do nonzero = nonzero or not zero(v.spent[k]) end
  if nonzero then change('spent was set to 0 (it was ' .. tostring(got[2] or 'missing') .. ')') end
  v.spent = nil
elseif not v.spent and got[1] then
  change('its unreadable spent counters (' .. tostring(got[2]) .. ') were set to 0')
end
if not v.spent then
  v.spent = {}
  for k = 1, count do v.spent[k] = ZERO end
end

-- The leases: recount what they hold; pair every lease with an expiry.
local expiry = {}
local scored = redis.call('ZRANGE', e, 0, -1, 'WITHSCORES')
for j = 1, #scored, 2 do expiry[scored[j]] = scored[j + 1] end
local all = redis.call('HGETALL', l)
local res, held, stale, present = {}, 0, 0, {}
local drop_l, drop_e, add_e = {}, {}, {}
for k = 1, count do res[k] = ZERO end
for j = 1, #all, 2 do
  local id, value = all[j], all[j + 1]
  present[id] = true
  if string.sub(value, 1, 1) == '=' then
    if not expiry[id] then
      drop_l[#drop_l + 1] = id
      stale = stale + 1
    end
  else
    local amounts = list(value, count)
    if not amounts then
      drop_l[#drop_l + 1] = id
      if expiry[id] then drop_e[#drop_e + 1] = id end
      change('unreadable lease ' .. id .. ' (' .. value .. ') was dropped')
    else
      held = held + 1
      for k = 1, count do res[k] = sat(add(res[k], amounts[k])) end
      if not expiry[id] then
        add_e[#add_e + 1] = id
        change('lease ' .. id .. ' had lost its expiry: it now expires in ' .. ttl .. ' ms')
      end
    end
  end
end
if stale > 0 then change(stale .. ' records of closed reservations without an expiry were dropped') end
local orphans = 0
for id in pairs(expiry) do
  if not present[id] then
    drop_e[#drop_e + 1] = id
    orphans = orphans + 1
  end
end
if orphans > 0 then change(orphans .. ' expiries without a lease were dropped') end
local stored = list(got[3], count)
if not stored or join(stored) ~= join(res) or tostring(held) ~= got[5] then
  change('reserved was recounted from the ' .. held .. ' leases held: '
    .. tostring(got[3] or 'missing') .. ' -> ' .. join(res))
end
v.res = res

local c = code(v)
local peak = rank(v, c)
if not zero_spent and (got[4] == '0' or got[4] == '1' or got[4] == '2') then
  peak = tonumber(got[4])
elseif not zero_spent and got[1] then
  change('its unreadable announced status (' .. tostring(got[4]) .. ') was set to ' .. peak)
end

local bad_window = false
if got[6] then
  local ws, we = string.match(got[6], '^(%d+),(%d+),.*$')
  if not ws or #ws > 16 or #we > 16 or tonumber(we) <= tonumber(ws) then
    bad_window = true
    change('its unreadable period window (' .. got[6] .. ') was dropped')
  end
end

local reply = {'OK', c}
for _, text in ipairs(changes) do reply[#reply + 1] = text end
if dry or (#changes == 0 and not zero_spent) then return reply end
redis.call('HSET', b, 'spec', v.spec, 'spent', join(v.spent), 'reserved', join(res), 'peak', peak,
  'held', held)
if bad_window then redis.call('HDEL', b, 'window') end
if #drop_l > 0 then redis.call('HDEL', l, unpack(drop_l)) end
if #drop_e > 0 then redis.call('ZREM', e, unpack(drop_e)) end
for _, id in ipairs(add_e) do redis.call('ZADD', e, NOW + ttl, id) end
L[1] = {w = KEYS[5]}
notify_all()
publish('')
return reply
