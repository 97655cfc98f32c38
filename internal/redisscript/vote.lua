-- vote: move branch ARGV[4] of the open group KEYS[1] to ARGV[5] (READY,
-- PREPARED or FAILED) with reason ARGV[3], under the rules of vote_on.
local r = load(KEYS[1])
if not r then return {'G'} end
local st = stale(r)
if st then return st end
local refused = vote_on(r, ARGV[4], ARGV[5], ARGV[3])
if refused then return refused end
return save(KEYS[1], r, ARGV[1], tonumber(get(r, 's')))
