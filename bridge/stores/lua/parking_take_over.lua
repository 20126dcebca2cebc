-- KEYS: owners hash, due zset. ARGV: heartbeat key prefix, now. Claims of dead workers are due
-- now; returns how many.
local owners = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #owners, 2 do
  if redis.call('EXISTS', ARGV[1] .. owners[i + 1]) == 0 then
    redis.call('HDEL', KEYS[1], owners[i])
    if redis.call('ZADD', KEYS[2], 'XX', 'CH', ARGV[2], owners[i]) == 1 then n = n + 1 end
  end
end
return n
