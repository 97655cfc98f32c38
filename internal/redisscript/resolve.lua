-- resolve: record the resolution ARGV[2] (JSON) on the open marker ARGV[1]
-- in the markers KEYS[3] of the group KEYS[1] (timeline KEYS[2]). A
-- terminal group whose last open marker this was gets the retention
-- ARGV[3] as TTL on its keys. Replies {'OK', marker JSON}, {'M'} (no such
-- marker) or {'R', marker JSON} (resolved already: nothing changed).
local raw = redis.call('HGET', KEYS[3], ARGV[1])
if not raw then return {'M'} end
local m = cjson.decode(raw)
if m.resolution then return {'R', raw} end
m.resolution = cjson.decode(ARGV[2])
local out = cjson.encode(m)
redis.call('HSET', KEYS[3], ARGV[1], out)
local s = redis.call('HGET', KEYS[1], 's')
if s then
  local open = redis.call('HINCRBY', KEYS[1], 'mo', -1)
  if terminal(tonumber(s)) and open <= 0 then
    for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
  end
else
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return {'OK', out}
