-- join: add branch ARGV[4] (REGISTERED; packed fixed fields ARGV[6],
-- reason ARGV[3]) to the ACTIVE group KEYS[1].
local r = load(KEYS[1])
if not r then return {'G'} end
local st = stale(r)
if st then return st end
local gs = tonumber(get(r, 's'))
if gs ~= G_ACTIVE then return conflict(r, gs, 'join refused: group already decided') end
local id = ARGV[4]
if get(r, 'K' .. id) then return conflict(r, gs, 'branch ' .. id .. ' already joined') end
local i = count(r) + 1
set(r, 'n', i)
set(r, 'K' .. id, i)
set(r, 'B' .. i, ARGV[6])
set(r, 'S' .. i, B_REGISTERED)
set(r, 'R' .. i, ARGV[3])
return save(KEYS[1], r, ARGV[1], gs)
