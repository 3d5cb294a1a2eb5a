-- reserve: hold amounts at every level of the chain, all or nothing (kernel Chain.reserve),
-- unless an earlier waiter is held back at one of its levels (first come, first served).
--   ARGV[A]          lease id (chosen by the client, so a lost reply can be released by id)
--   ARGV[A+1]        lease time to live, ms
--   ARGV[A+2]        '1' to let the reservation use the headroom
--   ARGV[A+3]        the caller's waiter ticket, or '' for none
--   ARGV[A+4]        'k' to keep the ticket queued when refused, 'x' to drop it
--   ARGV[A+5]        ticket time to live, ms (the owner renews it with every attempt)
--   ARGV[A+5+i]      the amounts at level i, in that level's dims order ('a,b,c')
-- Reply: {'OK', code, crossed, ...per level}
--     or {'DENIED', level, dim, remaining, impossible, queued, queued at level or 0}
--     or {'NOBUDGET', level} / {'LIMITS', level, stored spec} (nothing changed).

local id = id_arg(ARGV[A])
local ttl = ms_arg(ARGV[A + 1])
local headroom = ARGV[A + 2] == '1'
local ticket = ARGV[A + 3]
if ticket ~= '' then id_arg(ticket) end
local keep = ARGV[A + 4] == 'k'
local ticket_ttl = ms_arg(ARGV[A + 5])
local refusal = load_all()
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
reclaim_all()

-- The caller's ticket joins (or stays in) the queue of level q, keeping its number.
local function queue_at(q, seq)
  if seq == nil then seq = redis.call('HINCRBY', TICKETS, '#', 1) end
  for i = 1, n do
    if i ~= q and redis.call('ZSCORE', L[i].w, ticket) then
      if redis.call('ZRANGE', L[i].w, 0, 0)[1] == ticket then NOTIFY[i] = true end
      redis.call('ZREM', L[i].w, ticket)
    end
  end
  redis.call('ZADD', L[q].w, seq, ticket)
  redis.call('HSET', TICKETS, ticket, NOW + ticket_ttl)
  return q
end

-- The caller's place in line: its ticket's number, if the ticket is still alive.
local seq = nil
if ticket ~= '' then
  local expiry = redis.call('HGET', TICKETS, ticket)
  if expiry and tonumber(expiry) > NOW then
    for i = 1, n do
      local s = redis.call('ZSCORE', L[i].w, ticket)
      if s then seq = tonumber(s) break end
    end
  end
end

local function refuse(level, dim, remaining, impossible, queued)
  local at = 0
  if ticket ~= '' then
    if keep and not impossible then at = queue_at(level, seq) else drop_ticket(ticket) end
  end
  return done({'DENIED', level, dim, S(remaining), impossible and 1 or 0, queued and 1 or 0, at},
    ticket)
end

-- Does it fit? The first level, then the first dimension, that says no.
for i = 1, n do
  local v, want = L[i], amounts[i]
  local caps = headroom and v.lim or v.soft
  for k = 1, #v.dims do
    local used = add(v.spent[k], v.res[k])
    if lt(caps[k], add(used, want[k])) then
      -- Waiting cannot help when spent alone rules the request out at some level.
      local impossible = false
      for j = 1, n do
        local u, ask = L[j], amounts[j]
        local c = headroom and u.lim or u.soft
        for d = 1, #u.dims do
          if lt(c[d], add(u.spent[d], ask[d])) then impossible = true end
        end
      end
      return refuse(i, k, left(caps[k], used), impossible, false)
    end
  end
end

-- It fits. But a live ticket ahead of the caller, waiting at one of its levels, goes first.
for i = 1, n do
  local first, number = head(i)
  if first and first ~= ticket and (seq == nil or number < seq) then
    local v, want = L[i], amounts[i]
    local k = 1 -- name the largest ask there (as MemoryStore does)
    for d = 2, #v.dims do if lt(want[k], want[d]) then k = d end end
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
  v.dr = true
  redis.call('HSET', v.l, id, ARGV[A + 5 + i])
  redis.call('ZADD', v.e, NOW + ttl, id)
  local c, crossed = finish(v, code(v))
  reply[#reply + 1] = c
  reply[#reply + 1] = crossed
end
if ticket ~= '' then drop_ticket(ticket) end
return done(reply, ticket)
