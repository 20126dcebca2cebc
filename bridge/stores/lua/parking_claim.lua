-- KEYS: due zset, payload hash, owners hash, woken set. ARGV: now, limit, lease_until, owner ("" = none).
-- Returns [id, payload, woken, id, payload, woken, ...] (woken: 1 if Parking.wake made it due,
-- else 0); a member without payload (should not happen) is removed from the zset so it cannot
-- be claimed forever.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local payload = redis.call('HGET', KEYS[2], id)
  if payload then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id)
    if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], id, ARGV[4]) end
    out[#out + 1] = id
    out[#out + 1] = payload
    out[#out + 1] = redis.call('SREM', KEYS[4], id)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
