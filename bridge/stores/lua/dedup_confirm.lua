-- KEYS: item keys. ARGV: done value, window ms.
for _, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
end
return #KEYS
