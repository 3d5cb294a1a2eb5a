#!lua flags=allow-oom
-- reset: a new period for the leaf: spent goes to 0; live leases stay counted
-- (kernel Ledger.reset). (n is 1: only the budget itself.)
-- Reply: {'OK', code, 0}
--     or {'NOBUDGET', 1} / {'LIMITS', 1, spec} / {'DAMAGED', 1, what}.

local refusal = begin()
if refusal then return refusal end
local rolled = roll() if rolled then return rolled end
local v = L[1]
for k = 1, #v.dims do v.spent[k] = ZERO end
local c = code(v)
v.peak, v.ds, v.dp = rank(v, c), true, true
notify_all()
return done({'OK', c, 0})
