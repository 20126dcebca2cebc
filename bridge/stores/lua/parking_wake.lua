-- KEYS: the source's set (PARKED_SOURCE_PREFIX + source), due zset, owners hash, woken set,
-- sources hash, not-before hash. ARGV: now.
-- The source delivered again: each of its parked batches not claimed by a worker is marked
-- woken (its backoff starts over) and, if due later than now, becomes due now, or at its
-- not-before time (Segment's Retry-After) if that is later. The set is emptied (a batch that
-- fails again is parked, and so added, again). Returns how many woke.
local now = tonumber(ARGV[1])
local woken = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local due = redis.call('ZSCORE', KEYS[2], id)
  if due and redis.call('HEXISTS', KEYS[3], id) == 0 then
    local at = now
    local not_before = tonumber(redis.call('HGET', KEYS[6], id))
    if not_before and not_before > at then at = not_before end
    if tonumber(due) > at then redis.call('ZADD', KEYS[2], 'XX', at, id) end
    redis.call('SADD', KEYS[4], id)
    woken = woken + 1
  end
  redis.call('HDEL', KEYS[5], id)
end
redis.call('DEL', KEYS[1])
return woken
