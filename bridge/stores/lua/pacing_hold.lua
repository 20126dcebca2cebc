-- KEYS[1] = pacing key; ARGV = now ('' = the Redis server's clock), seconds, ttl margin.
-- No slot of the key before now + seconds (a 429's Retry-After): the theoretical arrival
-- time is moved there unless it is later already.
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local until_at = now + tonumber(ARGV[2])
local margin = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < until_at then
  redis.call('SET', KEYS[1], string.format('%.6f', until_at), 'PX', math.ceil((until_at - now + margin) * 1000))
end
return 1
