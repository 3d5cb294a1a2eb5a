#!lua flags=allow-oom
-- snapshot: the leaf's limits and counters, after giving back expired leases.
-- (n is 1: only the budget itself.) Decoded by _redis_layout.snapshot_of.
-- Reply: {'OK', spec, spent, reserved, verdict code}
--     or {'NOBUDGET', 1} / {'LIMITS', 1, spec} / {'DAMAGED', 1, what}.

local refusal = begin()
if refusal then return refusal end
local v = L[1]
return done({'OK', v.spec, join(v.spent), join(v.res), code(v)})
