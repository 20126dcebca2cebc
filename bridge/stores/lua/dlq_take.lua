-- KEYS: stream, counts. ARGV: want_entries ('1'/'0'), filter ('1'/'0'), reason, ids...
-- Deletes each id that exists (and matches the reason filter), decrements its reason's
-- counter, returns the deleted entries ([id, [field, value, ...]]) or their count.
local out = {}
local n = 0
for i = 4, #ARGV do
  local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #e > 0 then
    local f = e[1][2]
    local reason = ''
    for j = 1, #f, 2 do
      if f[j] == 'reason' then reason = f[j + 1] end
    end
    if ARGV[2] == '0' or reason == ARGV[3] then
      redis.call('XDEL', KEYS[1], ARGV[i])
      if redis.call('HINCRBY', KEYS[2], reason, -1) <= 0 then
        redis.call('HDEL', KEYS[2], reason)
      end
      n = n + 1
      if ARGV[1] == '1' then out[#out + 1] = e[1] end
    end
  end
end
if ARGV[1] == '1' then return out end
return n
