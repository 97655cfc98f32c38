-- create: write the new record KEYS[1] (ARGV: field, value, ..., then the
-- "created" event, JSON) unless the key exists, and start its timeline
-- KEYS[2]. Returns 1 if created, 0 if the id is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 1, #ARGV - 1))
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], ARGV[#ARGV])
return 1
