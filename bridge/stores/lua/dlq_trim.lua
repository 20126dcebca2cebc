-- KEYS: stream, counts, invalid ids list, trimmed counter. ARGV: reason, most kept.
-- Deletes the oldest letters of the reason while more than ``most kept`` exist; ids whose
-- entry is already gone (replayed or dropped) are skipped. Returns how many were deleted.
local keep = tonumber(ARGV[2])
local n = 0
while tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') > keep do
  local id = redis.call('LPOP', KEYS[3])
  if not id then break end
  if redis.call('XDEL', KEYS[1], id) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
    n = n + 1
  end
end
if n > 0 then redis.call('INCRBY', KEYS[4], n) end
return n
