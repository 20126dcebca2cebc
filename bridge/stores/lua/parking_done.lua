-- KEYS: due zset, payload hash, owners hash, sources hash, woken set, not-before hash.
-- ARGV: batch id, source set prefix (PARKED_SOURCE_PREFIX).
-- Forgets a parked batch everywhere; returns 1 if it was parked, else 0.
local id = ARGV[1]
local source = redis.call('HGET', KEYS[4], id)
if source then
  redis.call('SREM', ARGV[2] .. source, id)
  redis.call('HDEL', KEYS[4], id)
end
redis.call('HDEL', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
redis.call('SREM', KEYS[5], id)
redis.call('HDEL', KEYS[6], id)
return redis.call('ZREM', KEYS[1], id)
