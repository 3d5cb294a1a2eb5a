-- aiobudget: budgets that renew (aiobudget.Period). Loaded after _common.lua and before
-- each operation's own file (aiobudget/stores/_redis_scripts.py). Every operation script
-- calls roll() in one line, after it has read and checked everything and before its
-- first write: the roll is then atomic with the operation, exactly once per boundary
-- however many processes race on it.
--
-- Calendar arithmetic in IANA zones has no place in Lua, so the client computes the
-- boundaries and the server's clock (TIME) picks the window: a client whose clock is off
-- by minutes only sends boundaries that miss the server's now, and is asked for others.
--   ARGV[#ARGV - n + i]  level i's period: '' for none, or '<period text>|<b0>,<b1>,...'
--                        with consecutive boundaries in microseconds since the Unix epoch
--                        around the client's estimate of the server's time
--   state 'window'       '<start>,<end>,<period text>': the level's current window
-- The period text also ends the level's spec ('<limits>~<period text>'), so the period is
-- stored and checked with the limits (LIMITS refusal, update_limits).
-- roll() refuses, having written nothing:
--   {'PERIOD', level, stored spec}  the stored period is not the caller's (another process
--                                   changed it with update_limits): follow it and retry
--   {'CLOCK', server time in us}    the boundaries sent do not cover the server's now
-- A reply on a chain with a period ends with a trailer (added by done()):
--   {'W', server time, level 1's window 'start,end' or '', ..., level n's,
--    each window closed by this call 'level,start,end,spent'}

local NOW_US = tonumber(t[1]) * 1000000 + tonumber(t[2])
local TRAILER = false

local function period_text(spec)
  local at = string.find(spec, '~', 1, true)
  if at then return string.sub(spec, at + 1) end
  return ''
end

local function boundaries(s)
  local out = {}
  for part in string.gmatch(s, '[^,]+') do
    if not string.find(part, '^%d+$') or #part > 16 then fail('bad boundary ' .. part) end
    local b = tonumber(part)
    if #out > 0 and b <= out[#out] then fail('boundaries out of order ' .. s) end
    out[#out + 1] = b
  end
  if #out < 2 then fail('bad boundaries ' .. s) end
  return out
end

local function us(x) return string.format('%.0f', x) end

-- Close every level's window that the server's clock has left (spent goes to 0, as
-- reset does: live leases stay counted, crossings re-arm); nil, or a refusal.
local function roll()
  local base, plan = #ARGV - n, {}
  if base < A - 1 then fail('no period arguments') end
  for i = 1, n do -- read and check everything first
    local v, arg = L[i], ARGV[base + i]
    local want, b = '', nil
    if arg ~= '' then
      local bar = string.find(arg, '|', 1, true)
      if not bar then fail('bad period ' .. arg) end
      want, b = string.sub(arg, 1, bar - 1), boundaries(string.sub(arg, bar + 1))
    end
    if want ~= period_text(v.spec) then return {'PERIOD', i, v.spec} end
    if b then
      local s, e = nil, nil
      for k = 1, #b - 1 do
        if b[k] <= NOW_US and NOW_US < b[k + 1] then s, e = b[k], b[k + 1] end
      end
      if not s then return {'CLOCK', us(NOW_US)} end
      plan[i] = {s, e, want, redis.call('HGET', v.b, 'window')}
    end
  end
  if next(plan) == nil then return nil end
  local trailer, closed = {'W', us(NOW_US)}, {}
  for i = 1, n do
    local p, v = plan[i], L[i]
    if not p then
      trailer[#trailer + 1] = ''
    else
      local s, e, want, stored = p[1], p[2], p[3], p[4]
      local os, oe, op = nil, nil, nil
      if stored then os, oe, op = string.match(stored, '^(%d+),(%d+),(.*)$') end
      if os and op == want and s < tonumber(oe) then
        s, e = tonumber(os), tonumber(oe) -- the same window, or a clock that stepped back
      else
        if os and op == want then -- the window closed: report it, start from 0
          closed[#closed + 1] = i .. ',' .. os .. ',' .. oe .. ',' .. join(v.spent)
          for k = 1, #v.dims do v.spent[k] = ZERO end
          v.peak = rank(v, code(v))
          v.ds, v.dp = true, true
          NOTIFY[i] = true
          redis.call('HSET', v.b, 'spent', join(v.spent), 'peak', v.peak)
        end -- else a new budget, or another period: what was spent carries over
        redis.call('HSET', v.b, 'window', us(s) .. ',' .. us(e) .. ',' .. want)
      end
      trailer[#trailer + 1] = us(s) .. ',' .. us(e)
    end
  end
  for k = 1, #closed do trailer[#trailer + 1] = closed[k] end
  TRAILER = trailer
  return nil
end

-- Every reply that goes through done() carries the trailer.
local finish_with_save = done
local function done(reply, skip)
  if TRAILER then reply[#reply + 1] = TRAILER end
  return finish_with_save(reply, skip)
end
