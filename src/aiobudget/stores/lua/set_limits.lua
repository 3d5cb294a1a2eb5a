#!lua flags=allow-oom
-- set_limits: new limits for the leaf's dimensions, counters kept (kernel
-- Ledger.set_limits). (n is 1: only the budget itself.)
--   ARGV[A]          the new spec (same dimensions, same order)
-- Reply: {'OK', code, crossed}
--     or {'NOBUDGET', 1} / {'LIMITS', 1, spec} / {'DAMAGED', 1, what}.

local new = spec(ARGV[A]) or fail('bad limits ' .. ARGV[A])
local refusal = begin()
if refusal then return refusal end
local v = L[1]
if dimstr(new) ~= dimstr(v) then return {'LIMITS', 1, v.spec} end
local rolled = roll() if rolled then return rolled end
-- New limits keep the stored period.
v.spec, v.lim, v.warn, v.soft, v.dirty = ARGV[A] .. (string.match(v.spec, '~.*$') or ''),
  new.lim, new.warn, new.soft, true
local c = code(v)
v.peak, v.dp = math.min(v.peak, rank(v, c)), true
local crossed
c, crossed = finish(v, c)
notify_all()
return done({'OK', c, crossed})
