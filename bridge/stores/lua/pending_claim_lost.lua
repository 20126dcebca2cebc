-- KEYS: due zset, celery queue list, unacked hash, unacked index zset, owners hash.
-- ARGV: now, new due, limit, grace, heartbeat key prefix, settled (a due time), ids...
-- Returns ids of batches that no task will run, and pushes their due time forward (so one
-- sweeper claims each). A batch is held while a live worker is recorded as its owner, or, for
-- ``grace`` seconds after kombu recorded it as unacked, before the worker recorded itself.
-- Without ids: the overdue batches, and none while a task waits in the queue (it may be the
-- one). With ids (batches the caller found missing from the queue after a worker died): each
-- one still stored with a due time at most ``settled`` (untouched for a moment).
local ids
if #ARGV > 6 then
  ids = {}
  for i = 7, #ARGV do
    local due = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if due and tonumber(due) <= tonumber(ARGV[6]) then ids[#ids + 1] = ARGV[i] end
  end
else
  if redis.call('LLEN', KEYS[2]) > 0 then return {} end
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
end
if #ids == 0 then return {} end
local held = redis.call('HGETALL', KEYS[3])
local cutoff = tonumber(ARGV[1]) - tonumber(ARGV[4])
local out = {}
for _, id in ipairs(ids) do
  local found = false
  local entry = redis.call('HGET', KEYS[5], id)
  if entry then
    local owner = string.match(entry, '^(%S+) ')
    if owner and redis.call('EXISTS', ARGV[5] .. owner) == 1 then found = true end
  end
  if not found then
    for i = 1, #held, 2 do
      if string.find(held[i + 1], id, 1, true) then
        local since = redis.call('ZSCORE', KEYS[4], held[i])
        if since and tonumber(since) >= cutoff then found = true; break end
      end
    end
  end
  if not found then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
    out[#out + 1] = id
  end
end
return out
