#!lua flags=allow-oom
-- extend: keep a live lease for `ttl` more ms from now, at every level.
--   ARGV[A]          lease id
--   ARGV[A+1]        the new time to live, ms
-- Reply: {'OK'} or {'CLOSED', 'expired' | 'unknown' | 'closed'}
--     or {'NOBUDGET', level} / {'LIMITS', level, spec} / {'DAMAGED', level, what}.

local id = id_arg(ARGV[A])
local ttl = ms_arg(ARGV[A + 1])
local refusal = begin()
if refusal then return refusal end
local state, value = lease(id)
local rolled = roll() if rolled then return rolled end
if state ~= 'live' then return close_lost(id, state, value) end
for i = 1, n do
  local v = L[i]
  local held = value
  if i > 1 then held = redis.call('HGET', v.l, id) end
  if not held or string.sub(held, 1, 1) == '=' then
    return damaged(i, 'live lease ' .. id .. ' is missing here')
  end
  if not list(held, #v.dims) then return damaged(i, 'lease ' .. id .. ' is unreadable') end
  v.put[#v.put + 1] = {id, false, NOW + ttl}
end
return done({'OK'})
