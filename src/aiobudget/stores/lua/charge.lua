#!lua flags=allow-oom
-- charge: add usage to spent at every level (kernel Chain.charge). Never refused, unless
-- strict: then, if any level would pass a limit, nothing changes and the reply says where.
-- It runs when Redis is out of memory: usage that happened is recorded. Its id makes a
-- retry (after a lost reply) answer the first outcome instead of charging twice.
--   ARGV[A]          the charge's id
--   ARGV[A+1]        how long to remember the outcome for retries, ms
--   ARGV[A+2]        '1' for a strict charge
--   ARGV[A+2+i]      the amounts at level i, in that level's dims order
-- Reply: {'OK', code, crossed, ...per level}
--     or {'EXCEEDED', level, dim, limit, attempted (saturated)}
--     or {'NOBUDGET', level} / {'LIMITS', level, spec} / {'DAMAGED', level, what}.

local id = id_arg(ARGV[A])
local remember = ms_arg(ARGV[A + 1])
local strict = ARGV[A + 2] == '1'
local refusal = begin()
if refusal then return refusal end
local amounts = {}
for i = 1, n do amounts[i] = vec(ARGV[A + 2 + i], #L[i].dims) end
local state, value = lease(id)
if state == 'closed' then return answer(value) end
if state ~= 'unknown' then fail('charge id in use ' .. id) end
local rolled = roll() if rolled then return rolled end

if strict then
  for i = 1, n do
    local v, want = L[i], amounts[i]
    for k = 1, #v.dims do
      local total = add(add(v.spent[k], v.res[k]), want[k])
      if lt(v.lim[k], total) then
        return done({'EXCEEDED', i, k, S(v.lim[k]), S(sat(total))})
      end
    end
  end
end

local reply = {'OK'}
for i = 1, n do
  local v, want = L[i], amounts[i]
  for k = 1, #v.dims do
    if not zero(want[k]) then
      v.spent[k] = sat(add(v.spent[k], want[k]))
      v.ds = true
    end
  end
  local c, crossed = finish(v, code(v))
  reply[#reply + 1] = c
  reply[#reply + 1] = crossed
end
tombstone(id, reply, remember)
-- Nothing was freed, but a waiter may now be past hope: let it find out.
notify_all()
return done(reply)
