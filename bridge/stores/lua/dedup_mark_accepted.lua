-- KEYS: item keys. ARGV: accepted value, window ms. Marks only keys with no state yet.
for _, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2])
end
return #KEYS
