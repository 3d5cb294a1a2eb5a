-- sweep: reclaim expired leases (and forget expired tombstones and dead waiter tickets)
-- at every level of the chain, up to `limit` leases per level. With the check '-' (a
-- maintenance sweep by key, n = 1) a budget that no longer exists is skipped.
--   ARGV[A]          the most leases to reclaim per level
-- Reply: {'OK', leases reclaimed}
--     or {'NOBUDGET', level} / {'LIMITS', level, stored spec} (nothing changed).

local limit = ms_arg(ARGV[A])
local refusal = load_all()
if refusal then
  if refusal[1] == 'NOBUDGET' and ARGV[3] == '-' then return {'OK', 0} end
  return refusal
end
local count = 0
for i = 1, n do
  count = count + reclaim(i, limit)
  head(i)
end
return done({'OK', count})
