#!lua flags=allow-oom
-- release: give a lease back untouched at every level (kernel Lease.release). Also the
-- clean-up after a reservation whose reply was lost (cancelled, timed out): 'quiet' makes
-- an unknown lease no error, and the caller's waiter ticket, if any, leaves the queue.
-- It runs when Redis is out of memory: it only gives back.
--   ARGV[A]          lease id
--   ARGV[A+1]        how long to remember the outcome for retries, ms
--   ARGV[A+2]        '1' quiet: an unknown, expired or closed lease is not an error
--   ARGV[A+3]        a waiter ticket to drop, or ''
-- Reply: {'OK', code, crossed, ...per level} (just {'OK'} when quiet and nothing was held)
--     or {'CLOSED', 'expired' | 'unknown'}
--     or {'NOBUDGET', level} / {'LIMITS', level, spec} / {'DAMAGED', level, what}.

local id = id_arg(ARGV[A])
local remember = ms_arg(ARGV[A + 1])
local quiet = ARGV[A + 2] == '1'
local ticket = ARGV[A + 3]
if ticket ~= '' then id_arg(ticket) end
local refusal = begin()
if refusal then return refusal end
local rolled = roll() if rolled then return rolled end
if ticket ~= '' then forget_ticket(ticket) end

local state, value = lease(id)
if state == 'closed' then
  if quiet then return done({'OK'}) end
  local again = answer(value)
  if again[1] ~= 'OK' then return again end
  return done(again)
end
if state ~= 'live' then return close_lost(id, state, value, quiet) end
refusal = unlease(id, value)
if refusal then return refusal end

local reply = {'OK'}
for i = 1, n do
  -- Totals only fell, so nothing can cross: the code, without touching the peak.
  reply[#reply + 1] = code(L[i])
  reply[#reply + 1] = 0
end
tombstone(id, reply, remember)
notify_all()
return done(reply)
