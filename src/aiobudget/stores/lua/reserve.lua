#!lua
-- reserve: hold amounts at every level of the chain, all or nothing (kernel Chain.reserve),
-- unless an earlier waiter is held back on a dimension it asks for at one of its levels
-- (first come, first served). Refused as a whole when Redis is out of memory (no
-- allow-oom flag): a reservation is the one operation that makes Redis hold more.
--   ARGV[A]          lease id (chosen by the client, so a lost reply can be released by id)
--   ARGV[A+1]        lease time to live, ms
--   ARGV[A+2]        '1' to let the reservation use the headroom
--   ARGV[A+3]        the caller's waiter ticket, or '' for none
--   ARGV[A+4]        'k' to keep the ticket queued when refused, 'x' to drop it
--   ARGV[A+5]        ticket time to live, ms (the owner renews it with every attempt)
--   ARGV[A+5+i]      the amounts at level i, in that level's dims order ('a,b,c')
-- Reply: {'OK', code, crossed, ...per level}
--     or {'DENIED', level, dim, remaining, impossible, queued}
--     or {'NOBUDGET', level} / {'LIMITS', level, spec} / {'DAMAGED', level, what}.

local id = id_arg(ARGV[A])
local ttl = ms_arg(ARGV[A + 1])
local headroom = ARGV[A + 2] == '1'
local ticket = ARGV[A + 3]
if ticket ~= '' then id_arg(ticket) end
local keep = ARGV[A + 4] == 'k'
local ticket_ttl = ms_arg(ARGV[A + 5])
local refusal = begin()
if refusal then return refusal end
local amounts = {}
for i = 1, n do amounts[i] = vec(ARGV[A + 5 + i], #L[i].dims) end
local rolled = roll() if rolled then return rolled end

-- The same id again is a retry whose first reply was lost (a client or cluster
-- redirect retried it): answer as if granted now, with no crossing reported twice.
local existing = redis.call('HGET', L[1].l, id)
if existing then
  if existing ~= ARGV[A + 6] then fail('lease id in use ' .. id) end
  local again = {'OK'}
  for i = 1, n do
    again[#again + 1] = code(L[i])
    again[#again + 1] = 0
  end
  return done(again, ticket)
end

-- The caller's place in line: its ticket's number, if the ticket is still alive.
local seq = nil
if ticket ~= '' then seq = find_ticket(ticket) end

-- Refused at `level` on `dim`: the ticket (if any) waits there, holding back the requests
-- that ask something of a dimension it asks there (as MemoryStore's queue does).
local function refuse(level, dim, remaining, impossible, queued)
  if ticket ~= '' then
    if keep and not impossible then
      local number = seq
      if not number then
        local last = redis.call('HGET', TICKETS, '#')
        local count = 0
        if last then
          count = num(last)
          if not count or not lt(count, 1e15) then
            return damaged(n, 'its waiters numbering is unreadable')
          end
        end
        number = count + 1
        TW.counter = number
      end
      local blocked = {}
      for k = 1, #L[level].dims do
        if not zero(amounts[level][k]) then blocked[#blocked + 1] = k end
      end
      TW.queue = {level, number, S(NOW + ticket_ttl) .. ':' .. table.concat(blocked, ',')}
    else
      TW.drop = true
    end
  end
  return done({'DENIED', level, dim, S(remaining), impossible and 1 or 0, queued and 1 or 0},
    ticket)
end

-- Does it fit? The first level, then the first dimension, that says no.
for i = 1, n do
  local v, want = L[i], amounts[i]
  local caps = headroom and v.lim or v.soft
  local first = nil
  for k = 1, #v.dims do
    if not first and lt(caps[k], add(add(v.spent[k], v.res[k]), want[k])) then first = k end
  end
  if first then
    -- Waiting cannot help when spent alone rules the request out at some level.
    local impossible = false
    for j = 1, n do
      local u, ask = L[j], amounts[j]
      local c = headroom and u.lim or u.soft
      for d = 1, #u.dims do
        if lt(c[d], add(u.spent[d], ask[d])) then impossible = true end
      end
    end
    return refuse(i, first, left(caps[first], add(v.spent[first], v.res[first])), impossible,
      false)
  end
end

-- It fits. But a live ticket ahead of the caller, waiting at one of its levels and blocked
-- on a dimension the caller asks for there, goes first.
for i = 1, n do
  local v, want = L[i], amounts[i]
  local ahead, last = nil, nil
  for _, entry in ipairs(line(i)) do
    if entry[1] == ticket or (seq and entry[2] >= seq) then
      last = nil
      break
    end
    last = entry[2]
    for k = 1, #v.dims do
      if not zero(want[k]) and (not entry[3] or entry[3][k]) then
        ahead = ahead or {}
        ahead[k] = true
      end
    end
  end
  -- Past the tickets looked at, more may be ahead: assume they are in the way.
  if not ahead and v.more and last and (not seq or last < seq) then
    for k = 1, #v.dims do
      if not zero(want[k]) then
        ahead = ahead or {}
        ahead[k] = true
      end
    end
  end
  if ahead then
    local k = nil -- name the largest ask there (as MemoryStore does)
    for d = 1, #v.dims do if ahead[d] and (not k or lt(want[k], want[d])) then k = d end end
    return refuse(i, k, left(v.lim[k], add(v.spent[k], v.res[k])), false, true)
  end
end

-- Hold it everywhere.
local reply = {'OK'}
for i = 1, n do
  local v, want = L[i], amounts[i]
  for k = 1, #v.dims do
    if not zero(want[k]) then v.res[k] = add(v.res[k], want[k]) end
  end
  v.dr, v.held = true, v.held + 1
  v.put[#v.put + 1] = {id, ARGV[A + 5 + i], NOW + ttl}
  local c, crossed = finish(v, code(v))
  reply[#reply + 1] = c
  reply[#reply + 1] = crossed
end
if ticket ~= '' then forget_ticket(ticket) end
return done(reply, ticket)
