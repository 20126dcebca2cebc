-- KEYS: outcome keys. ARGV: accepted value, window ms, the request's claim value (or "").
-- Marks each key this request claimed, or that holds nothing (its claim expired), as accepted;
-- a key a worker has marked since (done) or another request holds is left as it is.
for _, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v or (ARGV[3] ~= '' and v == ARGV[3]) then
    redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
  end
end
return #KEYS
