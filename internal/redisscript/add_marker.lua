-- add-marker: record marker ARGV[1] (JSON ARGV[2]) in the markers KEYS[3]
-- of the group KEYS[1] unless a marker of that id exists; the group must
-- exist and not be terminal. Replies {'OK', 1} if it created the marker,
-- {'OK', 0} if it existed.
local s = redis.call('HGET', KEYS[1], 's')
if not s then return {'G'} end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return {'OK', 0} end
local gs = tonumber(s)
if terminal(gs) then return {'C', gs, 'no marker for a finished group', redis.call('HGET', KEYS[1], 'dl') or '0'} end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'mo', 1)
return {'OK', 1}
