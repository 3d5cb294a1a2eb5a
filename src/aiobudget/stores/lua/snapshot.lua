-- snapshot: the leaf's limits and counters, after reclaiming expired leases.
-- (n is 1: only the budget itself.)
-- Reply: {'OK', spec, spent, reserved, verdict code, live leases, live waiting tickets}
--     or {'NOBUDGET', 1} / {'LIMITS', 1, stored spec} (nothing changed).

local refusal = load_all()
if refusal then return refusal end
local rolled = roll() if rolled then return rolled end
reclaim_all()
local v = L[1]
-- Statistics. Closed leases stay a while as tombstones ('=...'): they are not held.
local held, waiting = 0, 0
for _, h in ipairs(redis.call('HVALS', v.l)) do
  if string.byte(h, 1) ~= 61 then held = held + 1 end
end
for _, ticket in ipairs(redis.call('ZRANGE', v.w, 0, -1)) do
  if tonumber(redis.call('HGET', TICKETS, ticket) or '0') > NOW then waiting = waiting + 1 end
end
return done({'OK', v.spec, join(v.spent), join(v.res), code(v), held, waiting})
