-- Completes jobs (prelude: queue.lua).
-- ARGV[1]: wake channel   ARGV[2]: queue name   ARGV[3]: n
-- then per item 3 values: id, lease token, result
-- Returns: per item 1 when completed, 0 when the token was not the job's current
-- lease (nothing changed).
local now = now_ms()
local out = {}
local ready = 0
for i = 0, tonumber(ARGV[3]) - 1 do
  local base = 4 + i * 3
  local id = ARGV[base]
  local rec = load(id)
  if not rec or rec.st ~= 'active' or rec.tok ~= ARGV[base + 1] then
    out[#out + 1] = 0
  else
    redis.call('ZREM', K.active, id)
    ready = ready + release_group(id, rec)
    if rec.kc > 0 then
      rec.st = 'completed'
      rec.tok = ''
      rec.due = now + rec.kc
      redis.call('ZADD', K.completed, rec.due, id)
      redis.call('HSET', K.results, id, ARGV[base + 2])
      save(id, rec)
    else
      redis.call('HDEL', K.jobs, id)
      redis.call('HDEL', K.payloads, id)
    end
    out[#out + 1] = 1
  end
end
wake(ARGV[1], ARGV[2], ready)
return out
