-- KEYS: celery queue list. ARGV: start, stop (LRANGE indexes). Returns {messages read, batch
-- ids named by them...}: the batch id is in the task's ``argsrepr`` header, ``['<id>']``.
local page = redis.call('LRANGE', KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
local out = {#page}
for _, m in ipairs(page) do
  local id = string.match(m, [=["argsrepr": "%['(%w+)'%]"]=])
  if id then out[#out + 1] = id end
end
return out
