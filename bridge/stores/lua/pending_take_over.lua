-- KEYS: owners hash, unacked hash, unacked index zset, due zset, batches hash.
-- ARGV: heartbeat key prefix, new due (for batches handed back), settled (a receipt time: a
-- live worker's finished task received before it loses its unacked entry).
-- Returns [id, task message, ...] for still-stored batches whose owner is dead (the message is
-- the dead owner's unacked entry, "" when kombu has none); drops their owner entries and the
-- dead owner's unacked entries. Drops stale entries (task no longer unacked) of anyone.
local owners = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #owners, 2 do
  local id = owners[i]
  local owner, tag = string.match(owners[i + 1], '^(%S+) (%S+)$')
  if not owner then
    redis.call('HDEL', KEYS[1], id)
  elseif redis.call('EXISTS', ARGV[1] .. owner) == 0 then
    local message = redis.call('HGET', KEYS[2], tag)
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], tag)
    redis.call('ZREM', KEYS[3], tag)
    if redis.call('HEXISTS', KEYS[5], id) == 1 then
      redis.call('ZADD', KEYS[4], ARGV[2], id)
      out[#out + 1] = id
      out[#out + 1] = message or ''
    end
  elseif redis.call('HEXISTS', KEYS[2], tag) == 0 then
    redis.call('HDEL', KEYS[1], id)
  elseif redis.call('HEXISTS', KEYS[5], id) == 0 then
    -- A live worker's task with nothing left to hand back: a batch already processed (its
    -- ack lost with a connection Redis dropped, or on its way), or another task (its id,
    -- keys.other_task_entry, names no batch), which the sweeper sends again when needed.
    -- Its unacked entry would only sit there for the visibility timeout and come back as a
    -- task with nothing to do.
    local since = redis.call('ZSCORE', KEYS[3], tag)
    if not since or tonumber(since) < tonumber(ARGV[3]) then
      redis.call('HDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[2], tag)
      redis.call('ZREM', KEYS[3], tag)
    end
  end
end
return out
