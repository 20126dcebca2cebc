-- KEYS: item keys. ARGV: our lease value (or an ingest request's claim). Deletes only the keys
-- that still hold it: our own live leases or claims. Returns how many it deleted.
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
