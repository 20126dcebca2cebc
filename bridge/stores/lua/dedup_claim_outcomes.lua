-- KEYS: outcome keys. ARGV: this request's claim value, claim ms, done value, accepted value.
-- Claims each outcome no one holds for one ingest request. Returns per key 1 NEW (claimed now,
-- or already this claim's) / 0 DONE / 3 ACCEPTED / 2 CLAIMED (another request is storing it).
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = 1
  else
    local v = redis.call('GET', k)
    if v == ARGV[3] then
      out[i] = 0
    elseif v == ARGV[4] then
      out[i] = 3
    elseif v == ARGV[1] then
      out[i] = 1
    elseif v then
      out[i] = 2
    else
      redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
      out[i] = 1
    end
  end
end
return out
