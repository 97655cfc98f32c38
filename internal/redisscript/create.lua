-- create: write the new record KEYS[1] (ARGV: field, value, ...) unless the
-- key exists. Returns 1 if created, 0 if the id is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
