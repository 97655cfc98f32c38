-- vote: move branch ARGV[4] of the open group KEYS[1] to ARGV[5] (READY,
-- PREPARED or FAILED). In an ACTIVE group REGISTERED, READY and PREPARED
-- may vote; in a PREPARING group only READY may, to PREPARED or FAILED.
local r = load(KEYS[1])
if not r then return {'G'} end
local i = get(r, 'K' .. ARGV[4])
if not i then return {'B'} end
local gs = tonumber(get(r, 's'))
local bs = bstate(r, i)
local to = tonumber(ARGV[5])
if gs == G_ACTIVE then
  if bs ~= B_REGISTERED and bs ~= B_READY and bs ~= B_PREPARED then
    return conflict(r, gs, 'branch ' .. ARGV[4] .. ' is ' .. bname(bs) .. ', cannot vote')
  end
elseif gs == G_PREPARING then
  if bs ~= B_READY or to == B_READY then
    return conflict(r, gs, 'branch ' .. ARGV[4] .. ' is ' .. bname(bs) .. ', cannot vote ' .. bname(to) .. ' while preparing')
  end
else
  return conflict(r, gs, 'vote refused: group already decided')
end
set(r, 'S' .. i, ARGV[5])
set(r, 'R' .. i, ARGV[3])
return save(KEYS[1], r, ARGV[1], gs)
