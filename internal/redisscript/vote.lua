-- vote: move branch ARGV[4] of the ACTIVE group KEYS[1] to ARGV[5]
-- (PREPARED or FAILED). REGISTERED and PREPARED may vote; FAILED is final.
local r = load(KEYS[1])
if not r then return {'G'} end
local i = get(r, 'K' .. ARGV[4])
if not i then return {'B'} end
local gs = tonumber(get(r, 's'))
if gs ~= G_ACTIVE then return conflict(r, gs, 'vote refused: group already decided') end
local bs = bstate(r, i)
if bs ~= B_REGISTERED and bs ~= B_PREPARED then
  return conflict(r, gs, 'branch ' .. ARGV[4] .. ' is ' .. bname(bs) .. ', cannot vote')
end
set(r, 'S' .. i, ARGV[5])
set(r, 'R' .. i, ARGV[3])
return save(KEYS[1], r, ARGV[1], gs)
