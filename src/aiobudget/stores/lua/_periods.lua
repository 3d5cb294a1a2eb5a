-- aiobudget: budgets that renew (aiobudget.Period). Loaded after _common.lua and before
-- each operation's own file (aiobudget/stores/_redis_scripts.py). Every operation script
-- calls roll() in one line, right after begin() and its own argument checks: like the
-- rest of the operation it only changes the levels in memory, and done() writes it all,
-- so the roll is atomic with the operation, exactly once per boundary however many
-- processes race on it, and a refusal or an error leaves nothing half done.
--
-- Calendar arithmetic in IANA zones has no place in Lua, so the client computes the
-- boundaries and the server's clock (TIME) picks the window: a client whose clock is off
-- by minutes only sends boundaries that miss the server's now, and is asked for others.
--   ARGV[#ARGV - n + i]  level i's period: '' for none, or '<period text>|<b0>,<b1>,...'
--                        with consecutive boundaries in microseconds since the Unix epoch
--                        around the client's estimate of the server's time
--   state 'window'       '<start>,<end>,<period text>': the level's current window (read
--                        and checked by begin(): v.window = {start, end, period text})
-- The period text also ends the level's spec ('<limits>~<period text>'), so the period is
-- stored and checked with the limits (LIMITS refusal, update_limits).
-- roll() refuses, having written nothing:
--   {'PERIOD', level, stored spec}  the stored period is not the caller's (another process
--                                   changed it with update_limits): follow it and retry
--   {'CLOCK', server time in us}    the boundaries sent do not cover the server's now
-- A reply on a chain with a period ends with a trailer (TRAILER, added by done()):
--   {'W', server time, level 1's window 'start,end' or '', ..., level n's,
--    each window closed by this call 'level,start,end,spent'}

local NOW_US = tonumber(t[1]) * 1000000 + tonumber(t[2])

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
-- reset does: live leases stay counted, crossings re-arm), in memory; nil, or a refusal
-- (nothing written).
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
      plan[i] = {s, e, want}
    end
  end
  if next(plan) == nil then return nil end
  local trailer, closed = {'W', us(NOW_US)}, {}
  for i = 1, n do
    local p, v = plan[i], L[i]
    if not p then
      trailer[#trailer + 1] = ''
    else
      local s, e, want = p[1], p[2], p[3]
      local old = v.window -- {start, end, period text}, or nil
      if old and old[3] == want and s < old[2] then
        s, e = old[1], old[2] -- the same window, or a clock that stepped back
      else
        if old and old[3] == want then -- the window closed: report it, start from 0
          closed[#closed + 1] = i .. ',' .. us(old[1]) .. ',' .. us(old[2]) .. ','
            .. join(v.spent)
          for k = 1, #v.dims do v.spent[k] = ZERO end
          v.peak = rank(v, code(v))
          v.ds, v.dp = true, true
          NOTIFY[i] = true
        end -- else a new budget, or another period: what was spent carries over
        v.window = {s, e, want}
        v.dw = us(s) .. ',' .. us(e) .. ',' .. want -- written by done()
      end
      trailer[#trailer + 1] = us(s) .. ',' .. us(e)
    end
  end
  for k = 1, #closed do trailer[#trailer + 1] = closed[k] end
  TRAILER = trailer -- every reply of done() carries it
  return nil
end
