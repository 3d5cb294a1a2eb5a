#!lua flags=allow-oom
-- sweep: maintenance of one budget found by its keys (n is 1, check '-'): give back up to
-- `limit` expired leases, forget expired tombstones and dead waiter tickets, and check in
-- full that what is reserved is what the leases hold. A budget whose state is gone (and
-- holds no lease) only has its expired tombstones forgotten.
--   ARGV[A]          the most leases to give back
-- Reply: {'OK', leases given back} or {'DAMAGED', 1, what}.

local limit = count_arg(ARGV[A])
local v, refusal = load(1)
if not v then
  if refusal[1] ~= 'NOBUDGET' then return refusal end
  local ids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', NOW, 'LIMIT', 0, limit)
  if #ids > 0 then
    redis.call('HDEL', KEYS[3], unpack(ids))
    redis.call('ZREM', KEYS[4], unpack(ids))
  end
  return {'OK', 0}
end
L[1] = v

-- The full check the operations cannot afford: reserved is the sum of the leases held.
local count = #v.dims
local held, live = {}, 0
for k = 1, count do held[k] = ZERO end
local all = redis.call('HGETALL', v.l)
for j = 1, #all, 2 do
  if string.sub(all[j + 1], 1, 1) ~= '=' then
    local amounts = list(all[j + 1], count)
    if not amounts then return damaged(1, 'lease ' .. all[j] .. ' is unreadable') end
    live = live + 1
    for k = 1, count do held[k] = sat(add(held[k], amounts[k])) end
  end
end
if join(held) ~= join(v.res) or live ~= v.held then
  return damaged(1, 'its reserved counters (' .. join(v.res) .. ', ' .. v.held
    .. ' leases) are not what its leases hold (' .. join(held) .. ', ' .. live .. ' leases)')
end

local ids = redis.call('ZRANGEBYSCORE', v.e, '-inf', NOW, 'LIMIT', 0, limit)
local given = 0
if #ids > 0 then
  local values = redis.call('HMGET', v.l, unpack(ids))
  for j = 1, #ids do
    if values[j] and string.sub(values[j], 1, 1) ~= '=' then given = given + 1 end
    refusal = drop(1, ids[j], values[j])
    if refusal then return refusal end
  end
end
NOTIFY[1] = true -- drops dead waiter tickets at the head of the line
return done({'OK', given})
