-- extend: keep a live lease for `ttl` more ms from now, at every level.
--   ARGV[A]          lease id
--   ARGV[A+1]        the new time to live, ms
-- Reply: {'OK'} or {'CLOSED', 'expired' | 'unknown' | 'closed'}
--     or {'NOBUDGET', level} / {'LIMITS', level, stored spec} (nothing changed).

local id = id_arg(ARGV[A])
local ttl = ms_arg(ARGV[A + 1])
local refusal = load_all()
if refusal then return refusal end
local state = lease_state(id)
local rolled = roll() if rolled then return rolled end
reclaim_all()
if state ~= 'live' then
  if state == 'expired' then
    for i, held in ipairs(take(id)) do
      if held then unhold(L[i], held) NOTIFY[i] = true end
    end
  end
  return done({'CLOSED', state})
end
for i = 1, n do redis.call('ZADD', L[i].e, 'XX', NOW + ttl, id) end
return done({'OK'})
