-- branch-done: record branch ARGV[4]'s phase-2 outcome ARGV[5] (COMMITTED,
-- ROLLED_BACK or LOST) in the decided group KEYS[1]; the last one makes the
-- group terminal. On a single server the caller may pass the undone index
-- as KEYS[4]: a group this makes terminal then leaves it in the same step.
local r = load(KEYS[1])
if not r then return {'G'} end
local st = stale(r)
if st then return st end
local id = ARGV[4]
local i = get(r, 'K' .. id)
if not i then return {'B'} end
local gs = tonumber(get(r, 's'))
if gs == G_ACTIVE or gs == G_PREPARING then return conflict(r, gs, 'outcome for branch ' .. id .. ' before a decision') end
local bs = bstate(r, i)
if done(bs) then return conflict(r, gs, 'branch ' .. id .. ' already ' .. bname(bs)) end
local to = tonumber(ARGV[5])
if to == B_COMMITTED and gs ~= G_COMMITTING and gs ~= G_COMMITTED then
  return {'P', 'BUG: branch committed in a group decided to roll back'}
end
if to == B_ROLLED_BACK and (gs == G_COMMITTING or gs == G_COMMITTED) then
  return {'P', 'BUG: branch rolled back in a group decided to commit'}
end
set(r, 'S' .. i, ARGV[5])
set(r, 'R' .. i, ARGV[3])
if to == B_LOST then
  local b = branch(r, i)
  local s = 'branch ' .. id .. ' (service ' .. (b[2] or '') .. ', instance ' .. (b[3] or '') .. ') lost: ' .. ARGV[3]
  local a = get(r, 'a') or ''
  if a == '' then set(r, 'a', s) else set(r, 'a', a .. '; ' .. s) end
end
gs = finish_if_done(r, gs, ARGV[2])
local reply = save(KEYS[1], r, ARGV[1], gs)
if KEYS[4] and terminal(gs) then
  redis.call('ZREM', KEYS[4], unpack_fields(get(r, 'h') or '')[1] or '')
end
return reply
