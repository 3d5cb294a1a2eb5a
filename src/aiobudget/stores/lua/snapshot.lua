-- snapshot: the leaf's limits and counters, after reclaiming expired leases.
-- (n is 1: only the budget itself.)
-- Reply: {'OK', spec, spent, reserved, verdict code}
--     or {'NOBUDGET', 1} / {'LIMITS', 1, stored spec} (nothing changed).

local refusal = load_all()
if refusal then return refusal end
local rolled = roll() if rolled then return rolled end
reclaim_all()
local v = L[1]
return done({'OK', v.spec, join(v.spent), join(v.res), code(v)})
