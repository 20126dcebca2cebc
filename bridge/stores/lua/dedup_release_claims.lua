-- KEYS: outcome keys. ARGV: the request's claim value. Drops this request's claims only (its
-- outcomes were not stored: a retry must not find them taken). Returns how many it dropped.
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
