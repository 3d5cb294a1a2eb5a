#!lua flags=allow-oom
-- snapshot: the leaf's limits and counters, after giving back expired leases, and its
-- statistics. (n is 1: only the budget itself.) Decoded by _redis_layout.snapshot.
-- Reply: {'OK', spec, spent, reserved, verdict code, live leases, live waiting tickets}
--     or {'NOBUDGET', 1} / {'LIMITS', 1, spec} / {'DAMAGED', 1, what}.

local refusal = begin()
if refusal then return refusal end
local rolled = roll() if rolled then return rolled end
local v = L[1]
local waiting = 0
for _, ticket in ipairs(redis.call('ZRANGE', v.w, 0, -1)) do
  if ticket_of(redis.call('HGET', TICKETS, ticket)) then waiting = waiting + 1 end
end
return done({'OK', v.spec, join(v.spent), join(v.res), code(v), v.held, waiting})
