#!lua flags=allow-oom
-- settle: release a lease exactly and add the actual usage to spent at every level
-- (kernel Lease.settle). Never refused for being over a limit: spend that happened is
-- recorded, even when Redis is out of memory. A retry after a lost reply gets the first
-- answer again (tombstone).
--   ARGV[A]          lease id
--   ARGV[A+1]        how long to remember the outcome for retries, ms
--   ARGV[A+1+i]      the actual usage at level i, in that level's dims order
-- Reply: {'OK', code, crossed, ...per level} or {'CLOSED', 'expired' | 'unknown'}
--     or {'NOBUDGET', level} / {'LIMITS', level, spec} / {'DAMAGED', level, what}.

local id = id_arg(ARGV[A])
local remember = ms_arg(ARGV[A + 1])
local refusal = begin()
if refusal then return refusal end
local actual = {}
for i = 1, n do actual[i] = vec(ARGV[A + 1 + i], #L[i].dims) end

local state, value = lease(id)
if state == 'closed' then return answer(value) end
local rolled = roll() if rolled then return rolled end
if state ~= 'live' then return close_lost(id, state, value) end
refusal = unlease(id, value)
if refusal then return refusal end

local reply = {'OK'}
for i = 1, n do
  local v, used = L[i], actual[i]
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
