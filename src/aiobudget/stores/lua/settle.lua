-- settle: release a lease exactly and add the actual usage to spent at every level
-- (kernel Lease.settle). Never refused for being over a limit: spend that happened is
-- recorded. A retry after a lost reply gets the first answer again (tombstone).
--   ARGV[A]          lease id
--   ARGV[A+1]        how long to remember the outcome for retries, ms
--   ARGV[A+1+i]      the actual usage at level i, in that level's dims order
-- Reply: {'OK', code, crossed, ...per level} or {'CLOSED', 'expired' | 'unknown'}
--     or {'NOBUDGET', level} / {'LIMITS', level, stored spec} (nothing changed).

local id = id_arg(ARGV[A])
local remember = ms_arg(ARGV[A + 1])
local refusal = load_all()
if refusal then return refusal end
local actual = {}
for i = 1, n do actual[i] = vec(ARGV[A + 1 + i], #L[i].dims) end

local state, value = lease_state(id)
if state == 'closed' then return from_tombstone(value) end
local rolled = roll() if rolled then return rolled end
if state ~= 'live' then
  reclaim_all()
  if state == 'expired' then
    for i, held in ipairs(take(id)) do
      if held then unhold(L[i], held) NOTIFY[i] = true end
    end
  end
  return done({'CLOSED', state})
end
reclaim_all()

local reply = {'OK'}
for i = 1, n do
  local v, used = L[i], actual[i]
  -- The leaf's entry is overwritten by the tombstone below; the others go.
  local held = i == 1 and value or redis.call('HGET', v.l, id)
  if held then
    unhold(v, held)
    if i > 1 then
      redis.call('HDEL', v.l, id)
      redis.call('ZREM', v.e, id)
    end
  end
  for k = 1, #v.dims do
    if not zero(used[k]) then v.spent[k] = sat(add(v.spent[k], used[k])) end
  end
  v.ds = true
  local c, crossed = finish(v, code(v))
  reply[#reply + 1] = c
  reply[#reply + 1] = crossed
end
tombstone(id, reply, remember)
notify_all()
return done(reply)
