-- KEYS: workers zset. ARGV: heartbeat key prefix. Removes and returns the workers found dead.
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    out[#out + 1] = id
  end
end
return out
