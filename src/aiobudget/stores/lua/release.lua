-- release: give a lease back untouched at every level (kernel Lease.release). Also the
-- clean-up after a reservation whose reply was lost (cancelled, timed out): 'quiet' makes
-- an unknown lease no error, and the caller's waiter ticket, if any, leaves the queue.
--   ARGV[A]          lease id
--   ARGV[A+1]        how long to remember the outcome for retries, ms
--   ARGV[A+2]        '1' quiet: an unknown, expired or closed lease is not an error
--   ARGV[A+3]        a waiter ticket to drop, or ''
-- Reply: {'OK', code, crossed, ...per level} (just {'OK'} when quiet and nothing was held)
--     or {'CLOSED', 'expired' | 'unknown'}
--     or {'NOBUDGET', level} / {'LIMITS', level, stored spec} (nothing changed).

local id = id_arg(ARGV[A])
local remember = ms_arg(ARGV[A + 1])
local quiet = ARGV[A + 2] == '1'
local ticket = ARGV[A + 3]
local refusal = load_all()
if refusal then return refusal end
local rolled = roll() if rolled then return rolled end
if ticket ~= '' then drop_ticket(id_arg(ticket)) end

local state, value = lease_state(id)
if state == 'closed' then
  if quiet then return done({'OK'}) end
  return done(from_tombstone(value))
end
if state ~= 'live' then
  reclaim_all()
  if state == 'expired' then
    for i, held in ipairs(take(id)) do
      if held then unhold(L[i], held) NOTIFY[i] = true end
    end
  end
  if quiet then return done({'OK'}) end
  return done({'CLOSED', state})
end
reclaim_all()

local reply = {'OK'}
for i = 1, n do
  local v = L[i]
  -- The leaf's entry is overwritten by the tombstone below; the others go.
  local held = i == 1 and value or redis.call('HGET', v.l, id)
  if held then
    unhold(v, held)
    if i > 1 then
      redis.call('HDEL', v.l, id)
      redis.call('ZREM', v.e, id)
    end
  end
  -- Totals only fell, so nothing can cross: the code, without touching the peak.
  reply[#reply + 1] = code(v)
  reply[#reply + 1] = 0
end
tombstone(id, reply, remember)
notify_all()
return done(reply)
