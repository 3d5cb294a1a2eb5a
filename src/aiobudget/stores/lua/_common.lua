-- aiobudget: the part every operation script shares. It is inserted after each operation
-- file's flags line when the scripts are loaded (aiobudget/stores/_redis_scripts.py), so
-- each script is still one self-contained EVALSHA. This is the Lua port of aiobudget.kernel:
-- keep it in step with kernel.py; tests/redis/test_differential.py runs both on the same
-- inputs. The key layout and the reply decoding live in aiobudget/stores/_redis_layout.py.
--
-- KEYS: all keys of one budget tree carry the tree's hash tag, so on Redis Cluster they
-- live in one slot and a whole chain (leaf, parent, ...) is updated by one script.
--   KEYS[1]              the tree's tickets: hash ticket -> 'expiry' or 'expiry:dims'
--                        (ms; dims: where it is blocked, '1,3'); '#' -> last number
--   KEYS[4i-2 .. 4i+1]   level i of the chain (1 is the leaf, n the farthest ancestor):
--     state     hash   spec, spent, reserved (decimal lists 'a,b,c'), peak (0, 1 or 2),
--                      held (how many leases are live here, expired ones not given back
--                      yet included), window (a budget with a period: see _periods.lua)
--     leases    hash   lease id -> amounts held at this level, or '=' .. outcome once closed
--     expiries  zset   lease id -> expiry (server ms); a closed lease's tombstone expiry
--     waiters   zset   ticket -> arrival number, for tickets held back at this level
-- ARGV header, before every operation's own arguments (which start at ARGV[A]):
--   ARGV[1]       n, the number of levels
--   ARGV[2]       the tree's wake-up channel
--   ARGV[3i]      level i's check: 'v' verify the spec, 'u' update to it, 'd' dims only,
--                 '-' none (maintenance)
--   ARGV[3i+1]    level i's spec 'dim=limit/warn/headroom,...' (warn '' for none), with
--                 '~<period text>' after it for a budget with a period; or dims
--   ARGV[3i+2]    ms an unnamed budget's keys outlive its last use (0: a named budget,
--                 whose keys stay)
--
-- Every operation has the same shape, so that an error can never leave half a change
-- (Redis keeps the writes a failing script made before the error):
--   1. its arguments, checked (a bad one is a caller's bug: a Lua error);
--   2. begin(): every level's stored state read and checked (a damaged record answers
--      {'DAMAGED', level, what}), and the expired leases to give back collected;
--      then roll() (lua/_periods.lua), which closes the windows the server's clock has
--      left, in memory too;
--   3. its own reads (the lease it closes, the waiters ahead) and its decision, in memory;
--   4. done(reply): every write, then the wake-up notice. Nothing after step 3 can fail.
--
-- Amounts go up to 2**63 - 1 and sums of three of them must stay exact, but Lua numbers
-- are doubles (exact to 2**53). So a number below 2**53 (nearly all of them) is a plain
-- Lua number, and a larger one is a pair {hi, lo} = hi * 10**15 + lo: decimal limbs, so
-- parsing and printing are string slicing, and every partial sum stays far below 2**53.
-- Each operation takes the plain path when both sides are plain and the result is below
-- 2**53 (a double sum that is not exact rounds to 2**53 or more, so the test is safe),
-- and normalizes results below 2**53 back to plain numbers.

local B = 1e15
local P = 9007199254740992 -- 2**53
local function norm(hi, lo) -- hi * B + lo, plain where that is exact
  if hi < 9 or (hi == 9 and lo < 7199254740992) then return hi * B + lo end
  return {hi, lo}
end
local function N(s) -- a decimal string of digits
  local len = #s
  if len <= 16 then
    local x = tonumber(s) -- exact below 2**53, and 2**53 or more (rounded) above
    if x < P then return x end
  end
  return norm(tonumber(string.sub(s, 1, len - 15)), tonumber(string.sub(s, len - 14)))
end
local function S(x)
  if type(x) == 'number' then return string.format('%.0f', x) end
  return string.format('%.0f%015.0f', x[1], x[2])
end
local function pair(x)
  if type(x) ~= 'number' then return x[1], x[2] end
  if x < B then return 0, x end
  local hi = math.floor(x / B)
  local lo = x - hi * B -- exact: a small multiple of B off x at most
  if lo < 0 then return hi - 1, lo + B end
  if lo >= B then return hi + 1, lo - B end
  return hi, lo
end
local function add(a, b)
  if type(a) == 'number' and type(b) == 'number' then
    local sum = a + b
    if sum < P then return sum end
  end
  local ah, al = pair(a)
  local bh, bl = pair(b)
  local hi, lo = ah + bh, al + bl
  if lo >= B then hi, lo = hi + 1, lo - B end
  return norm(hi, lo)
end
local function sub(a, b) -- a >= b
  if type(a) == 'number' and type(b) == 'number' then return a - b end
  local ah, al = pair(a)
  local bh, bl = pair(b)
  local hi, lo = ah - bh, al - bl
  if lo < 0 then hi, lo = hi - 1, lo + B end
  return norm(hi, lo)
end
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

-- -- reading numbers: every stored or given number is checked where it is read ----------

-- A decimal in 0 .. 2**63 - 1, or nil (not a string, empty, a sign, a fraction, too big).
local function num(s)
  if type(s) ~= 'string' then return nil end
  local len = #s
  if len == 0 or len > 19 or string.find(s, '%D') then return nil end
  local x = N(s)
  if len == 19 and lt(MAX, x) then return nil end
  return x
end
-- Exactly `count` numbers 'a,b,c', or nil. Up to 16 of them, one pattern match: a digit
-- string of at most 15 digits is a number as it is; longer ones get num()'s checks.
local LISTS = {}
local function list(s, count)
  if type(s) ~= 'string' then return nil end
  if count <= 16 then
    local pattern = LISTS[count]
    if not pattern then
      pattern = '^' .. string.rep('(%d+),', count - 1) .. '(%d+)$'
      LISTS[count] = pattern
    end
    local out = {string.match(s, pattern)}
    if #out ~= count then return nil end
    for k = 1, count do
      local part = out[k]
      if #part <= 15 then out[k] = tonumber(part) else
        local x = num(part)
        if x == nil then return nil end
        out[k] = x
      end
    end
    return out
  end
  local out, k = {}, 0
  for part in string.gmatch(s .. ',', '([^,]*),') do
    k = k + 1
    local x = num(part)
    if x == nil or k > count then return nil end
    out[k] = x
  end
  if k ~= count then return nil end
  return out
end
local function vec(s, count) -- the caller's amounts
  return list(s, count) or fail('expected ' .. count .. ' amounts, got ' .. tostring(s))
end
local JOINS = {} -- 'a,b,c' of plain numbers: one string.format
local function join(v)
  local count = #v
  local plain = count >= 1 and count <= 16
  for k = 1, count do
    if type(v[k]) ~= 'number' then plain = false end
  end
  if not plain then
    local out = {}
    for k = 1, count do out[k] = S(v[k]) end
    return table.concat(out, ',')
  end
  local format = JOINS[count]
  if not format then
    format = '%.0f' .. string.rep(',%.0f', count - 1)
    JOINS[count] = format
  end
  return string.format(format, unpack(v))
end
local function id_arg(s)
  if #s > 64 or not string.find(s, '^[%w_%-]+$') then fail('bad id ' .. s) end
  return s
end
local function ms_arg(s) -- a duration in ms: 1 .. 10**11 (about three years)
  if not string.find(s, '^%d+$') or #s > 11 or s == '0' then fail('bad duration ' .. s) end
  return tonumber(s)
end
local function count_arg(s)
  if not string.find(s, '^%d+$') or #s > 6 or s == '0' then fail('bad count ' .. s) end
  return tonumber(s)
end

-- -- limits ----------------------------------------------------------------------------

-- Canonical: no leading zero (what is printed back is what was read, as spec_of writes).
local function canonical(s)
  local len = #s
  if len > 1 and string.byte(s) == 48 then return nil end
  if len <= 16 then
    local x = tonumber(s)
    if x < P then return x end
  end
  return num(s)
end

-- The limits in `text`, or nil unless it is canonical: dims valid and distinct, numbers
-- plain, warn and headroom at most the limit. (A spec from a caller and a stored one are
-- held to the same rule; the client writes specs exactly so.) A budget with a period has
-- '~<period text>' after its limits: stored and compared with them, read by _periods.lua.
local function spec(text)
  if type(text) ~= 'string' then return nil end
  local limits, tail = string.match(text, '^([^~]*)(.*)$')
  if tail ~= '' and not string.find(tail, '^~[^~]+$') then return nil end
  local dims, lim, warns, soft, seen = {}, {}, {}, {}, {}
  local k, at = 0, 1
  -- The parts must follow each other, one comma apart, from the first character to the
  -- last: nothing skipped between the matches (a dim with a character a dim may not have
  -- is cut short by the pattern, so it leaves a gap too).
  for s, dim, l, w, h, e in string.gmatch(limits, '()([%w_%.%-]+)=(%d+)/(%d*)/(%d+)()') do
    if s ~= at or seen[dim] or (k > 0 and string.byte(limits, s - 1) ~= 44) then return nil end
    seen[dim] = true
    local limit, headroom, warn = canonical(l), canonical(h), false
    if w ~= '' then warn = canonical(w) end
    if not limit or not headroom or warn == nil or lt(limit, headroom)
      or (warn and lt(limit, warn)) then
      return nil
    end
    k = k + 1
    dims[k], lim[k], warns[k], soft[k] = dim, limit, warn, sub(limit, headroom)
    at = e + 1
  end
  if k == 0 or at ~= #limits + 2 then return nil end
  return {dims = dims, lim = lim, warn = warns, soft = soft}
end
local function dimstr(v) return table.concat(v.dims, ',') end

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

-- -- step 2: loading and checking the chain ----------------------------------------------

local n = tonumber(ARGV[1])
if not n or n < 1 or n > 64 or #KEYS ~= 1 + 4 * n then fail('bad key count') end
local CHANNEL = ARGV[2]
local TICKETS = KEYS[1]
local A = 3 * n + 3
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local L = {}      -- the levels, as loaded
local NOTIFY = {} -- levels whose first waiters should re-check: budget was freed there
local TW = {}     -- the waiter-ticket writes: dead tickets, the caller's ticket

local function damaged(i, what) return {'DAMAGED', i, what} end

-- Level i's state, or nil and the reply that refuses the call. Reads only.
local function load(i)
  local mode, text = ARGV[3 * i], ARGV[3 * i + 1]
  local idle = tonumber(ARGV[3 * i + 2])
  if not idle or idle < 0 or idle > 1e11 then fail('bad idle time ' .. ARGV[3 * i + 2]) end
  local b, l, e = KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local got = redis.call('HMGET', b, 'spec', 'spent', 'reserved', 'peak', 'held', 'window')
  -- Every lease (and tombstone) has an expiry and every expiry a lease: the two keys
  -- vanish or survive together, unless something outside aiobudget touched them.
  local leases, expiries = redis.call('HLEN', l), redis.call('ZCARD', e)
  if leases ~= expiries then
    return nil, damaged(i, 'its leases and their expiries disagree (' .. leases
      .. ' leases, ' .. expiries .. ' expiries)')
  end
  local v
  if not got[1] then
    if got[2] or got[3] or got[4] or got[5] or got[6] then
      return nil, damaged(i, 'its limits are missing')
    end
    -- Counters gone while leases are live (deleted, evicted): never start from zero.
    if leases > 0 then
      for _, held in ipairs(redis.call('HVALS', l)) do
        if string.sub(held, 1, 1) ~= '=' then
          return nil, damaged(i, 'its counters vanished while reservations were held')
        end
      end
    end
    if mode ~= 'v' and mode ~= 'u' then return nil, {'NOBUDGET', i} end
    v = spec(text) or fail('bad limits ' .. text)
    v.spec, v.spent, v.res, v.peak, v.held, v.dirty = text, {}, {}, 0, 0, true
    for k = 1, #v.dims do v.spent[k], v.res[k] = ZERO, ZERO end
  else
    v = spec(got[1])
    if not v then return nil, damaged(i, 'its stored limits are unreadable') end
    local count = #v.dims
    v.spec, v.spent, v.res = got[1], list(got[2], count), list(got[3], count)
    if not v.spent then return nil, damaged(i, 'its spent counters are unreadable') end
    if not v.res then return nil, damaged(i, 'its reserved counters are unreadable') end
    local peak = got[4]
    if peak ~= '0' and peak ~= '1' and peak ~= '2' then
      return nil, damaged(i, 'its announced status is unreadable')
    end
    v.peak = tonumber(peak)
    v.held = num(got[5])
    if not v.held or not lt(v.held, B) then
      return nil, damaged(i, 'its count of leases held is unreadable')
    end
    -- Leases deleted or evicted while reserved: never keep budget reserved for ever.
    if leases < v.held then
      return nil, damaged(i, 'its leases vanished (' .. v.held .. ' held, ' .. leases
        .. ' found)')
    end
    -- A budget with a period: its current window 'start,end,period text' (us).
    if got[6] then
      local s, e, p = string.match(got[6], '^(%d+),(%d+),(.*)$')
      if not s or #s > 16 or #e > 16 or tonumber(e) <= tonumber(s) then
        return nil, damaged(i, 'its period window is unreadable')
      end
      v.window = {tonumber(s), tonumber(e), p}
    end
    if v.held == 0 then
      for k = 1, count do
        if not zero(v.res[k]) then
          return nil, damaged(i, v.dims[k] .. ' ' .. S(v.res[k])
            .. ' is reserved but no lease holds it')
        end
      end
    end
    if mode == 'd' then
      if text ~= dimstr(v) then return nil, {'LIMITS', i, got[1]} end
    elseif (mode == 'v' or mode == 'u') and text ~= got[1] then
      if mode ~= 'u' then return nil, {'LIMITS', i, got[1]} end
      local new = spec(text) or fail('bad limits ' .. text)
      if dimstr(new) ~= dimstr(v) then return nil, {'LIMITS', i, got[1]} end
      -- update_limits: as kernel Ledger.set_limits(report=False), the peak only falls,
      -- so this very operation announces a crossing the new limits cause.
      v.spec, v.lim, v.warn, v.soft, v.dirty = text, new.lim, new.warn, new.soft, true
      v.peak = math.min(v.peak, rank(v, code(v)))
      v.raised = true
    end
  end
  v.b, v.l, v.e, v.w, v.idle = b, l, e, KEYS[4 * i + 1], idle
  v.gone, v.seen, v.put, v.last = {}, {}, {}, 0
  if idle > 0 then -- an unnamed budget: its keys must outlive its last lease
    local latest = redis.call('ZRANGE', e, '-1', '-1', 'WITHSCORES')
    if latest[2] then v.last = tonumber(latest[2]) end
  end
  return v
end

-- Lease `id` leaves level i, holding `held` there (false: nothing; '=...': a tombstone):
-- given back in memory now, deleted by done(). A damaged record refuses the call.
local function drop(i, id, held)
  local v = L[i]
  if v.seen[id] then return nil end
  v.seen[id] = true
  v.gone[#v.gone + 1] = id
  if not held or string.sub(held, 1, 1) == '=' then return nil end
  local amounts = list(held, #v.dims)
  if not amounts then return damaged(i, 'lease ' .. id .. ' is unreadable') end
  if v.held < 1 then return damaged(i, 'lease ' .. id .. ' is held, but its count is 0') end
  v.held = v.held - 1
  for k = 1, #v.dims do
    if lt(v.res[k], amounts[k]) then
      return damaged(i, 'lease ' .. id .. ' holds more ' .. v.dims[k] .. ' than is reserved')
    end
    v.res[k] = sub(v.res[k], amounts[k])
  end
  v.dr = true
  NOTIFY[i] = true
  return nil
end

-- Collect up to `limit` expired leases (and expired tombstones) at level i. (Arguments of
-- redis.call are given as text where they can be: Redis turns a Lua number into text on
-- every call.)
local function collect(i, limit)
  local v = L[i]
  local ids = redis.call('ZRANGEBYSCORE', v.e, '-inf', NOW, 'LIMIT', '0', limit)
  if #ids == 0 then return nil end
  local held = redis.call('HMGET', v.l, unpack(ids))
  for j = 1, #ids do
    local refusal = drop(i, ids[j], held[j])
    if refusal then return refusal end
  end
  return nil
end

-- Step 2: load and check every level, and collect what expired. Nil, or the refusal.
local function begin()
  for i = 1, n do
    local v, refusal = load(i)
    if not v then return refusal end
    L[i] = v
  end
  for i = 1, n do
    local refusal = collect(i, '64')
    if refusal then return refusal end
  end
  return nil
end

-- -- leases ------------------------------------------------------------------------------

-- The state of lease `id` at the leaf: 'live', 'expired', 'closed' (a tombstone) or
-- 'unknown', and its stored value.
local function lease(id)
  local held = redis.call('HGET', L[1].l, id)
  if not held then return 'unknown' end
  if string.sub(held, 1, 1) == '=' then return 'closed', held end
  local expiry = redis.call('ZSCORE', L[1].e, id)
  if not expiry or tonumber(expiry) <= NOW then return 'expired', held end
  return 'live', held
end

-- Live lease `id` (its leaf value `held`) leaves every level; nil, or the refusal.
local function unlease(id, held)
  for i = 1, n do
    local value = held
    if i > 1 then value = redis.call('HGET', L[i].l, id) end
    if not value or string.sub(value, 1, 1) == '=' then
      return damaged(i, 'live lease ' .. id .. ' is missing here')
    end
    local refusal = drop(i, id, value)
    if refusal then return refusal end
  end
  return nil
end

-- The closed operation's answer kept in tombstone `value`: {'OK', code, crossed, ...}.
local function answer(value)
  local reply = {'OK'}
  for part in string.gmatch(string.sub(value, 2), '[^,]+') do
    local x = tonumber(part)
    if not x or not string.find(part, '^%d+$') then
      return damaged(1, 'the record of a closed reservation is unreadable')
    end
    reply[#reply + 1] = x
  end
  if #reply ~= 1 + 2 * n then return damaged(1, 'the record of a closed reservation is unreadable') end
  return reply
end

-- Remember an operation's answer at the leaf for `ttl` ms under its id, so that a retry
-- (after a lost reply) gets the same answer and never counts twice.
local function tombstone(id, reply, ttl)
  local v = L[1]
  v.put[#v.put + 1] = {id, '=' .. table.concat(reply, ',', 2), NOW + ttl}
end

-- -- waiters -------------------------------------------------------------------------------

local K = 16 -- tickets looked at per level and call (a bound, so a script stays short)
local KLAST = '15' -- K - 1, as text for redis.call

-- A ticket's expiry and the dims it is blocked on (a set of indexes at its level, or
-- false: all of them); nil for a dead or unreadable ticket.
local function ticket_of(value)
  if not value then return nil end
  local expiry, dims = string.match(value, '^(%d+):?([%d,]*)$')
  expiry = tonumber(expiry)
  if not expiry or expiry <= NOW then return nil end
  if dims == '' then return expiry, false end
  local set = {}
  for d in string.gmatch(dims, '%d+') do set[tonumber(d)] = true end
  return expiry, set
end

-- The first K tickets waiting at level i: live ones as {ticket, number, dims}; dead ones
-- are noted for removal. Reads only.
local function line(i)
  local v = L[i]
  if v.queue then return v.queue end
  local first = redis.call('ZRANGE', v.w, '0', KLAST, 'WITHSCORES')
  local q = {}
  if #first > 0 then
    local ids = {}
    for j = 1, #first, 2 do ids[#ids + 1] = first[j] end
    local values = redis.call('HMGET', TICKETS, unpack(ids))
    for j = 1, #ids do
      local expiry, dims = ticket_of(values[j])
      if expiry then
        q[#q + 1] = {ids[j], tonumber(first[2 * j]), dims}
      else
        TW.dead = TW.dead or {}
        TW.dead[#TW.dead + 1] = {i, ids[j]}
        NOTIFY[i] = true
      end
    end
  end
  v.queue = q
  v.more = #first == 2 * K and redis.call('ZCARD', v.w) > K
  return q
end

-- Where `ticket` waits (levels) and its number if it is alive. Reads only.
local function find_ticket(ticket)
  local at, number = {}, nil
  local alive = ticket_of(redis.call('HGET', TICKETS, ticket))
  for i = 1, n do
    local s = redis.call('ZSCORE', L[i].w, ticket)
    if s then
      at[i] = true
      if alive then number = tonumber(s) end
    end
  end
  TW.ticket, TW.at = ticket, at
  return number
end

-- The caller's ticket leaves every queue (done() writes it).
local function forget_ticket(ticket)
  if not TW.at then find_ticket(ticket) end
  TW.drop = true
end

local function write_tickets()
  if TW.dead then
    for _, d in ipairs(TW.dead) do
      redis.call('ZREM', L[d[1]].w, d[2])
      redis.call('HDEL', TICKETS, d[2])
    end
  end
  local ticket = TW.ticket
  if not ticket then return end
  local q = TW.queue -- {level, number, value}, or nil
  for i in pairs(TW.at) do
    if not q or i ~= q[1] then
      redis.call('ZREM', L[i].w, ticket)
      NOTIFY[i] = true -- it may have been first there
    end
  end
  if q then
    redis.call('ZADD', L[q[1]].w, q[2], ticket)
    redis.call('HSET', TICKETS, ticket, q[3])
    if TW.counter then redis.call('HSET', TICKETS, '#', TW.counter) end
  elseif TW.drop then
    redis.call('HDEL', TICKETS, ticket)
  end
end

-- The tickets first in line at level i (but `skip`, the caller), into `ids`: those with
-- no live ticket ahead of them blocked on one of their dims. Dead tickets are dropped.
-- Runs after the writes, on what they left: it reads with pcall and cannot fail.
local function first_in_line(i, skip, ids, seen)
  local w = L[i].w
  local ok, first = pcall(redis.call, 'ZRANGE', w, '0', KLAST)
  if not ok or #first == 0 then return end
  local ok2, values = pcall(redis.call, 'HMGET', TICKETS, unpack(first))
  if not ok2 then return end
  local claimed = {}
  for j = 1, #first do
    local ticket = first[j]
    local expiry, dims = ticket_of(values[j])
    if not expiry then
      pcall(redis.call, 'ZREM', w, ticket)
      pcall(redis.call, 'HDEL', TICKETS, ticket)
    else
      local free = true
      if dims then
        for d in pairs(dims) do if claimed[d] then free = false end end
      elseif next(claimed) then
        free = false
      end
      if free and ticket ~= skip and not seen[ticket] then
        seen[ticket] = true
        ids[#ids + 1] = ticket
      end
      if not dims then return end -- blocked on everything: nobody behind is first
      for d in pairs(dims) do claimed[d] = true end
    end
  end
end

-- Tell the tickets first in line at every level in NOTIFY (but `skip`) to re-check.
local function publish(skip)
  local ids, seen = {}, {}
  for i = 1, n do
    if NOTIFY[i] or (L[i] and L[i].raised) then first_in_line(i, skip, ids, seen) end
  end
  if #ids > 0 then redis.call('PUBLISH', CHANNEL, table.concat(ids, ' ')) end
end
local function notify_all()
  for i = 1, n do NOTIFY[i] = true end
end

-- -- step 4: writing -------------------------------------------------------------------------

local function write()
  for i = 1, n do
    local v = L[i]
    local gone = v.gone
    if #gone > 0 and #v.put > 0 then -- a lease closed here and its tombstone put: one write
      local again, kept = {}, {}
      for _, p in ipairs(v.put) do if p[2] then again[p[1]] = true end end
      for _, id in ipairs(gone) do if not again[id] then kept[#kept + 1] = id end end
      gone = kept
    end
    if #gone > 0 then
      redis.call('HDEL', v.l, unpack(gone))
      redis.call('ZREM', v.e, unpack(gone))
    end
    for _, p in ipairs(v.put) do
      if p[2] then
        redis.call('HSET', v.l, p[1], p[2])
        redis.call('ZADD', v.e, p[3], p[1])
      else -- a new expiry for a lease that stays
        redis.call('ZADD', v.e, 'XX', p[3], p[1])
      end
      if p[3] > v.last then v.last = p[3] end
    end
    if v.dirty then
      redis.call('HSET', v.b, 'spec', v.spec, 'spent', join(v.spent), 'reserved', join(v.res),
        'peak', v.peak, 'held', v.held)
      if v.dw then redis.call('HSET', v.b, 'window', v.dw) end
    elseif v.ds or v.dr or v.dp or v.dw then
      local fields = {}
      if v.dw then fields[#fields + 1] = 'window' fields[#fields + 1] = v.dw end
      if v.ds then fields[#fields + 1] = 'spent' fields[#fields + 1] = join(v.spent) end
      if v.dr then
        fields[#fields + 1] = 'reserved'
        fields[#fields + 1] = join(v.res)
        fields[#fields + 1] = 'held'
        fields[#fields + 1] = v.held
      end
      if v.dp then fields[#fields + 1] = 'peak' fields[#fields + 1] = v.peak end
      redis.call('HSET', v.b, unpack(fields))
    end
  end
  write_tickets()
  -- Unnamed budgets: every key goes once idle that long past the last lease's expiry.
  for i = 1, n do
    local v = L[i]
    if v.idle > 0 then
      local keep = v.idle + math.max(0, v.last - NOW)
      redis.call('PEXPIRE', v.b, keep)
      redis.call('PEXPIRE', v.l, keep)
      redis.call('PEXPIRE', v.e, keep)
      redis.call('PEXPIRE', v.w, keep)
      if i == n then redis.call('PEXPIRE', TICKETS, keep) end
    end
  end
end

-- The periods' trailer (lua/_periods.lua), or false: every reply of done() carries it.
local TRAILER = false

-- Write, wake whom the call concerns, and return `reply`.
local function done(reply, skip)
  write()
  publish(skip)
  if TRAILER then reply[#reply + 1] = TRAILER end
  return reply
end

-- A lease that is not live: an expired one is given back now. The reply says what it was
-- ({'OK'} when `quiet`).
local function close_lost(id, state, held, quiet)
  if state == 'expired' then
    for i = 1, n do
      local value = held
      if i > 1 then value = redis.call('HGET', L[i].l, id) end
      local refusal = drop(i, id, value)
      if refusal then return refusal end
    end
  end
  if quiet then return done({'OK'}) end
  return done({'CLOSED', state})
end
