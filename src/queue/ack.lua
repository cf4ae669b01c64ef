-- Completes jobs (prelude: queue.lua).
-- ARGV[1]: wake channel   ARGV[2]: queue name   ARGV[3]: n
-- then per item 3 values: id, lease token, result
-- Returns: per item 1 when completed, 0 when the token was not the job's current
-- lease (nothing changed).
local now = now_ms()
local ids = batch_ids(3)
local blobs = hmget_many(K.jobs, ids)
local out = {}
local ready = 0
-- Taken out of active, and deleted, with one command each for the whole batch.
local finished, removed = {}, {}
-- An id acked twice in one call: the second finds the job already finished.
local seen = {}
for i, id in ipairs(ids) do
  local token = ARGV[4 + (i - 1) * 3 + 1]
  local rec = blobs[i] and not seen[id] and cmsgpack.unpack(blobs[i])
  if not rec or rec.st ~= 'active' or rec.tok ~= token then
    out[i] = 0
  else
    seen[id] = true
    finished[#finished + 1] = id
    ready = ready + release_group(id, rec)
    if rec.kc > 0 then
      rec.st = 'completed'
      rec.tok = ''
      rec.due = now + rec.kc
      redis.call('ZADD', K.completed, rec.due, id)
      redis.call('HSET', K.results, id, ARGV[4 + (i - 1) * 3 + 2])
      save(id, rec)
    else
      removed[#removed + 1] = id
    end
    out[i] = 1
  end
end
call_many('ZREM', K.active, finished)
count(META.completed, #finished)
call_many('HDEL', K.jobs, removed)
call_many('HDEL', K.payloads, removed)
wake(ARGV[1], ARGV[2], ready)
return out
