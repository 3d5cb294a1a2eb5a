-- aiobudget: the part every operation script shares. It is prepended to each operation
-- file when the scripts are loaded (aiobudget/stores/_redis_scripts.py), so each script
-- is still one self-contained EVALSHA. This is the Lua port of aiobudget.kernel: keep it
-- in step with kernel.py; tests/redis/test_differential.py runs both on the same inputs.
--
-- KEYS: all keys of one budget tree carry the tree's hash tag, so on Redis Cluster they
-- live in one slot and a whole chain (leaf, parent, ...) is updated by one script.
--   KEYS[1]              the tree's tickets: hash ticket -> expiry (ms); '#' -> last number
--   KEYS[4i-2 .. 4i+1]   level i of the chain (1 is the leaf, n the farthest ancestor):
--     state     hash   spec, spent, reserved (decimal lists 'a,b,c'), peak (0, 1 or 2)
--     leases    hash   lease id -> amounts held at this level, or '=' .. outcome once closed
--     expiries  zset   lease id -> expiry (server ms); a closed lease's tombstone expiry
--     waiters   zset   ticket -> arrival number, for tickets held back at this level
-- ARGV header, before every operation's own arguments (which start at ARGV[A]):
--   ARGV[1]       n, the number of levels
--   ARGV[2]       the tree's wake-up channel
--   ARGV[2i+1]    level i's check: 'v' verify the spec, 'u' update to it, 'd' dims only,
--                 '-' none (sweep)
--   ARGV[2i+2]    level i's spec 'dim=limit/warn/headroom,...' (warn '' for none), or dims
--
-- Amounts go up to 2**63 - 1 and sums of three of them must stay exact, but Lua numbers
-- are doubles (exact to 2**53). So a number below 10**15 (nearly all of them) is a plain
-- Lua number, and a larger one is a pair {hi, lo} = hi * 10**15 + lo: decimal limbs, so
-- parsing and printing are string slicing, and every partial sum stays far below 2**53.
-- Each operation takes the plain path when both sides are plain, and normalizes results
-- below 10**15 back to plain numbers.

local B = 1e15
local function N(s) -- a decimal string of digits
  local len = #s
  if len <= 15 then return tonumber(s) end
  local hi = tonumber(string.sub(s, 1, len - 15))
  local lo = tonumber(string.sub(s, len - 14))
  if hi == 0 then return lo end
  return {hi, lo}
end
local function S(x)
  if type(x) == 'number' then return string.format('%.0f', x) end
  return string.format('%.0f%015.0f', x[1], x[2])
end
local function pair(x) if type(x) == 'number' then return 0, x end return x[1], x[2] end
local function norm(hi, lo)
  if hi == 0 then return lo end
  return {hi, lo}
end
local function add(a, b)
  if type(a) == 'number' and type(b) == 'number' then
    local sum = a + b
    if sum < B then return sum end
    return {1, sum - B}
  end
  local ah, al = pair(a)
  local bh, bl = pair(b)
  local hi, lo = ah + bh, al + bl
  if lo >= B then hi, lo = hi + 1, lo - B end
  return norm(hi, lo)
end
local function sub(a, b) -- a >= b, or a negative result to test with neg()
  if type(a) == 'number' and type(b) == 'number' then return a - b end
  local ah, al = pair(a)
  local bh, bl = pair(b)
  local hi, lo = ah - bh, al - bl
  if lo < 0 then hi, lo = hi - 1, lo + B end
  return norm(hi, lo)
end
local function neg(x) if type(x) == 'number' then return x < 0 end return x[1] < 0 end
local function lt(a, b)
  if type(a) == 'number' and type(b) == 'number' then return a < b end
  local ah, al = pair(a)
  local bh, bl = pair(b)
  return ah < bh or (ah == bh and al < bl)
end
local MAX = N('9223372036854775807')
local ZERO = 0
local function sat(x) if lt(MAX, x) then return MAX end return x end
local function left(cap, used) if lt(used, cap) then return sub(cap, used) end return ZERO end
local function zero(x) return x == 0 end

local function fail(message) return error('aiobudget: ' .. message) end
-- An amount from the caller: digits only, at most 2**63 - 1. (Stored numbers were
-- written by these scripts and are read with N alone.)
local function amount(s)
  local len = #s
  if len == 0 or len > 19 or string.find(s, '%D') then fail('bad amount ' .. s) end
  local x = N(s)
  if len == 19 and lt(MAX, x) then fail('amount above 2**63 - 1: ' .. s) end
  return x
end
local function vec(s, count) -- the caller's 'a,b,c', checked
  local out = {}
  for part in string.gmatch(s, '[^,]+') do out[#out + 1] = amount(part) end
  if #out ~= count then fail('expected ' .. count .. ' amounts, got ' .. s) end
  return out
end
local function nums(s) -- a stored 'a,b,c'
  local out, k = {}, 0
  for part in string.gmatch(s, '[^,]+') do
    k = k + 1
    out[k] = N(part)
  end
  return out
end
local function join(v)
  local out = {}
  for k = 1, #v do out[k] = S(v[k]) end
  return table.concat(out, ',')
end
local function id_arg(s)
  if #s > 64 or not string.find(s, '^[%w_%-]+$') then fail('bad id ' .. s) end
  return s
end
local function ms_arg(s)
  if not string.find(s, '^%d+$') or #s > 12 then fail('bad duration ' .. s) end
  return tonumber(s)
end

-- -- limits ----------------------------------------------------------------------------

local function parse_spec(spec)
  local v = {dims = {}, lim = {}, warn = {}, soft = {}}
  local k = 0
  for dim, l, w, h in string.gmatch(spec, '([^,=]+)=(%d+)/(%d*)/(%d+)') do
    k = k + 1
    local limit = N(l)
    v.dims[k], v.lim[k] = dim, limit
    v.warn[k] = w ~= '' and N(w) or false
    v.soft[k] = h == '0' and limit or sub(limit, N(h))
  end
  return v
end
local function dimstr(v) return table.concat(v.dims, ',') end
local function checked_spec(spec) -- a spec from a caller: canonical, warn and headroom <= limit
  local v = parse_spec(spec)
  local parts = {}
  for k = 1, #v.dims do
    local w = v.warn[k]
    if lt(MAX, v.lim[k]) or neg(v.soft[k]) or (w and lt(v.lim[k], w)) then
      fail('bad limits ' .. spec)
    end
    parts[k] = v.dims[k] .. '=' .. S(v.lim[k]) .. '/' .. (w and S(w) or '') .. '/'
      .. S(sub(v.lim[k], v.soft[k]))
  end
  if #parts == 0 or table.concat(parts, ',') ~= string.match(spec, '^[^~]*') then
    fail('bad limits ' .. spec)
  end
  return v
end

-- -- verdicts (kernel Ledger._code, _rank, _finish) -----------------------------------------

-- 0 is CONTINUE, k is WARN on dim k, n + k is EXHAUSTED on dim k (dims counted from 1).
local function code(v)
  local n, warn = #v.dims, 0
  for k = 1, n do
    local used = add(v.spent[k], v.res[k])
    if not lt(used, v.lim[k]) then return n + k end
    if warn == 0 and v.warn[k] and not lt(used, v.warn[k]) then warn = k end
  end
  return warn
end
local function rank(v, c)
  if c == 0 then return 0 elseif c <= #v.dims then return 1 end
  return 2
end
-- The code after a change, and 1 when it is a crossing (a rise above the peak reported
-- since the last reset), else 0.
local function finish(v, c)
  local r = rank(v, c)
  if r <= v.peak then return c, 0 end
  v.peak, v.dp = r, true
  return c, 1
end

-- -- loading the chain -----------------------------------------------------------------

local n = tonumber(ARGV[1])
if not n or n < 1 or #KEYS ~= 1 + 4 * n then fail('bad key count') end
local CHANNEL = ARGV[2]
local TICKETS = KEYS[1]
local A = 2 * n + 3
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Level i's state, or nil and the reply that refuses the call. Reads only: nothing is
-- written until every level has loaded, so a refusal changes nothing.
local function load(i)
  local mode, text = ARGV[2 * i + 1], ARGV[2 * i + 2]
  local b = KEYS[4 * i - 2]
  local got = redis.call('HMGET', b, 'spec', 'spent', 'reserved', 'peak')
  local v
  if not got[1] then
    if mode == 'd' or mode == '-' then return nil, {'NOBUDGET', i} end
    v = checked_spec(text)
    v.spec, v.spent, v.res, v.peak, v.dirty = text, {}, {}, 0, true
    for k = 1, #v.dims do v.spent[k], v.res[k] = ZERO, ZERO end
  else
    v = parse_spec(got[1])
    v.spec, v.spent, v.res, v.peak = got[1], nums(got[2]), nums(got[3]), tonumber(got[4])
    if (mode == 'd' and text ~= dimstr(v)) or ((mode == 'v' or mode == 'u') and text ~= got[1]) then
      if mode ~= 'u' then return nil, {'LIMITS', i, got[1]} end
      local new = checked_spec(text)
      if dimstr(new) ~= dimstr(v) then return nil, {'LIMITS', i, got[1]} end
      -- update_limits: as kernel Ledger.set_limits, whose crossing nobody is told of.
      v.spec, v.lim, v.warn, v.soft, v.dirty = text, new.lim, new.warn, new.soft, true
      v.peak = rank(v, code(v))
      v.raised = true
    end
  end
  v.b, v.l, v.e, v.w = b, KEYS[4 * i - 1], KEYS[4 * i], KEYS[4 * i + 1]
  return v
end

local L = {}
local function load_all()
  for i = 1, n do
    local v, refusal = load(i)
    if not v then return refusal end
    L[i] = v
  end
  return nil
end

-- Write back what changed: v.dirty (a new budget, new limits) writes everything, else
-- v.ds, v.dr and v.dp flag spent, reserved and peak.
local function save()
  for i = 1, n do
    local v = L[i]
    if v.dirty then
      redis.call('HSET', v.b, 'spec', v.spec, 'spent', join(v.spent), 'reserved', join(v.res),
        'peak', v.peak)
    elseif v.ds or v.dr or v.dp then
      local fields = {}
      if v.ds then fields[#fields + 1] = 'spent' fields[#fields + 1] = join(v.spent) end
      if v.dr then fields[#fields + 1] = 'reserved' fields[#fields + 1] = join(v.res) end
      if v.dp then fields[#fields + 1] = 'peak' fields[#fields + 1] = v.peak end
      redis.call('HSET', v.b, unpack(fields))
    end
  end
end

-- -- leases ------------------------------------------------------------------------------

local NOTIFY = {} -- levels whose first waiter should re-check: budget was freed there

local function unhold(v, held)
  local k = 1
  for part in string.gmatch(held, '[^,]+') do
    v.res[k] = sub(v.res[k], N(part))
    k = k + 1
  end
  v.dr = true
end

-- Give back up to `limit` expired leases at level i (and drop expired tombstones).
local function reclaim(i, limit)
  local v = L[i]
  local ids = redis.call('ZRANGEBYSCORE', v.e, '-inf', NOW, 'LIMIT', 0, limit)
  if #ids == 0 then return 0 end
  local held = redis.call('HMGET', v.l, unpack(ids))
  local count = 0
  for j = 1, #ids do
    local h = held[j]
    if h and string.sub(h, 1, 1) ~= '=' then
      unhold(v, h)
      count = count + 1
    end
  end
  redis.call('HDEL', v.l, unpack(ids))
  redis.call('ZREM', v.e, unpack(ids))
  if count > 0 then NOTIFY[i] = true end
  return count
end
local function reclaim_all()
  for i = 1, n do reclaim(i, 64) end
end

-- The state of lease `id` at the leaf: 'live', 'expired', 'closed' (tombstone) or
-- 'unknown', and the stored value.
local function lease_state(id)
  local held = redis.call('HGET', L[1].l, id)
  if not held then return 'unknown' end
  if string.sub(held, 1, 1) == '=' then return 'closed', held end
  if tonumber(redis.call('ZSCORE', L[1].e, id) or '0') <= NOW then return 'expired', held end
  return 'live', held
end

-- Take lease `id` off every level: returns what each level held (false where absent).
local function take(id)
  local out = {}
  for i = 1, n do
    local v = L[i]
    out[i] = redis.call('HGET', v.l, id)
    if out[i] then
      redis.call('HDEL', v.l, id)
      redis.call('ZREM', v.e, id)
    end
  end
  return out
end

-- Remember a closed lease's outcome at the leaf for `ttl` ms, so that a retry of the same
-- settle or release (after a lost reply) gets the same answer, never a second refund.
local function tombstone(id, reply, ttl)
  redis.call('HSET', L[1].l, id, '=' .. table.concat(reply, ',', 2))
  redis.call('ZADD', L[1].e, NOW + ttl, id)
end
local function from_tombstone(value)
  local reply = {'OK'}
  for part in string.gmatch(string.sub(value, 2), '[^,]+') do reply[#reply + 1] = tonumber(part) end
  return reply
end

-- -- waiters -------------------------------------------------------------------------------

-- The first live ticket waiting at level i and its number. Tickets whose owner stopped
-- renewing them (a dead process) are dropped on the way, a bounded number per call;
-- past that bound the next one is taken as live, which can only make a newcomer wait.
local function head(i)
  local w = L[i].w
  for _ = 1, 16 do
    local first = redis.call('ZRANGE', w, 0, 0, 'WITHSCORES')
    if #first == 0 then return nil end
    local expiry = redis.call('HGET', TICKETS, first[1])
    if expiry and tonumber(expiry) > NOW then return first[1], tonumber(first[2]) end
    redis.call('ZREM', w, first[1])
    redis.call('HDEL', TICKETS, first[1])
    NOTIFY[i] = true
  end
  local first = redis.call('ZRANGE', w, 0, 0, 'WITHSCORES')
  if #first == 0 then return nil end
  return first[1], tonumber(first[2])
end

-- Take `ticket` out of every level's queue; a level where it was first gets a notice.
local function unqueue(ticket)
  for i = 1, n do
    local w = L[i].w
    if redis.call('ZSCORE', w, ticket) then
      local first = redis.call('ZRANGE', w, 0, 0)
      if first[1] == ticket then NOTIFY[i] = true end
      redis.call('ZREM', w, ticket)
    end
  end
end
local function drop_ticket(ticket)
  unqueue(ticket)
  redis.call('HDEL', TICKETS, ticket)
end

-- Tell the first waiter of every level in NOTIFY (but `skip`, the caller) to re-check.
local function publish(skip)
  local ids, seen = {}, {}
  for i = 1, n do
    if NOTIFY[i] or (L[i] and L[i].raised) then
      local first = head(i)
      if first and first ~= skip and not seen[first] then
        seen[first] = true
        ids[#ids + 1] = first
      end
    end
  end
  if #ids > 0 then redis.call('PUBLISH', CHANNEL, table.concat(ids, ' ')) end
end
local function notify_all()
  for i = 1, n do NOTIFY[i] = true end
end

-- Save, wake whom the call concerns, and return `reply`.
local function done(reply, skip)
  save()
  publish(skip)
  return reply
end
