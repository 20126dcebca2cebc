-- KEYS: item keys. ARGV: lease value, lease ms, done value, heartbeat key prefix, prefix of a
-- lease held by a worker with a heartbeat. Returns 1 NEW / 0 DONE / 2 LEASED. A lease whose
-- owner has a heartbeat counts only while that heartbeat lives: a dead worker's lease is taken.
-- Such a worker's own lease is taken again too: it is one process running one task at a time,
-- so a lease it finds is one an interrupted earlier attempt left (e.g. Redis went away
-- between reserve and confirm), not a send in progress.
-- (The heartbeat keys are read by name: fine on a single Redis or Sentinel, not on a Cluster.)
local out = {}
local live = ARGV[5]
for i, k in ipairs(KEYS) do
  if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = 1
  else
    local v = redis.call('GET', k)
    if v == ARGV[3] then
      out[i] = 0
    elseif v and string.sub(v, 1, #live) == live
        and (v == ARGV[1] or redis.call('EXISTS', ARGV[4] .. string.sub(v, 3)) == 0) then
      redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
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
