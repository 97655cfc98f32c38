-- decide: move the open group KEYS[1] to ARGV[5]. PREPARING (from ACTIVE
-- only) needs every branch READY or PREPARED and one READY at least;
-- COMMITTING needs every branch PREPARED, or a single READY branch (one
-- phase); ROLLING_BACK needs nothing. A decided group with no branch left
-- to notify becomes terminal at once. With ARGV[4] set, the vote of that
-- branch to ARGV[6] (reason ARGV[10]) is applied first, in the same script.
local r = load(KEYS[1])
if not r then return {'G'} end
local st = stale(r)
if st then return st end
if ARGV[4] ~= '' then
  -- The vote this decision carries (ARGV[6] its state, ARGV[10] its reason).
  local refused = vote_on(r, ARGV[4], ARGV[6], ARGV[10])
  if refused then return refused end
end
local gs = tonumber(get(r, 's'))
if gs ~= G_ACTIVE and gs ~= G_PREPARING then return conflict(r, gs, 'already decided') end
local to = tonumber(ARGV[5])
local n = count(r)
if to == G_PREPARING then
  if gs ~= G_ACTIVE then return conflict(r, gs, 'already preparing') end
  local ready = false
  for i = 1, n do
    local bs = bstate(r, i)
    if bs ~= B_READY and bs ~= B_PREPARED then
      return conflict(r, gs, 'prepare refused: branch ' .. (branch(r, i)[1] or '') .. ' is ' .. bname(bs))
    end
    if bs == B_READY then ready = true end
  end
  if not ready then return conflict(r, gs, 'prepare refused: no branch to prepare') end
  set(r, 's', to)
  set(r, 'r', ARGV[3])
  return save(KEYS[1], r, ARGV[1], to)
end
if to == G_COMMITTING then
  local one_phase = n == 1 and bstate(r, 1) == B_READY
  for i = 1, n do
    local bs = bstate(r, i)
    if bs ~= B_PREPARED and not one_phase then
      return conflict(r, gs, 'commit refused: branch ' .. (branch(r, i)[1] or '') .. ' is ' .. bname(bs))
    end
  end
end
set(r, 's', to)
set(r, 'dm', ARGV[2])
set(r, 'r', ARGV[3])
gs = finish_if_done(r, to, ARGV[2])
return save(KEYS[1], r, ARGV[1], gs)
