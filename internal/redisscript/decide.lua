-- decide: move the ACTIVE group KEYS[1] to ARGV[5] (COMMITTING, which needs
-- every branch PREPARED, or ROLLING_BACK). A group with no branch left to
-- notify becomes terminal at once.
local r = load(KEYS[1])
if not r then return {'G'} end
local gs = tonumber(get(r, 's'))
if gs ~= G_ACTIVE then return conflict(r, gs, 'already decided') end
local to = tonumber(ARGV[5])
if to == G_COMMITTING then
  for i = 1, count(r) do
    local bs = bstate(r, i)
    if bs ~= B_PREPARED then
      return conflict(r, gs, 'commit refused: branch ' .. (branch(r, i)[1] or '') .. ' is ' .. bname(bs))
    end
  end
end
set(r, 's', to)
set(r, 'dm', ARGV[2])
set(r, 'r', ARGV[3])
gs = finish_if_done(r, to, ARGV[2])
return save(KEYS[1], r, ARGV[1], gs)
