-- KEYS[1] = pacing key; ARGV = now ('' = the Redis server's clock), interval,
-- tolerance, ttl margin (seconds), longest wait to reserve ('' = any). Returns the wait in
-- seconds as a string (Redis truncates Lua numbers returned to integers). A wait longer than
-- the longest (a held key) reserves nothing: the caller does not use the slot.
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local margin = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local longest = tonumber(ARGV[5])
if longest ~= nil and wait > longest then
  return string.format('%.6f', wait)
end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now + margin) * 1000)
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', ttl_ms)
return string.format('%.6f', wait)
