-- Deletes one job that no consumer holds (prelude: queue.lua).
-- ARGV[1]: wake channel   ARGV[2]: queue name   ARGV[3]: the job's id
-- Returns: the state it had; 'active' (nothing deleted) when a consumer holds
-- it; false when there is no such job
local id = ARGV[3]
local rec = load(id)
if not rec then
  return false
end
if rec.st == 'active' then
  return 'active'
end
local index = { waiting = K.waiting, delayed = K.delayed, dead = K.dead, completed = K.completed }
if redis.call('ZREM', index[rec.st], id) == 0 and rec.st == 'waiting' and rec.g ~= '' then
  -- Waiting behind its group's current job.
  redis.call('ZREM', K.backlog, backlog_member(rec, id))
end
-- A waiting or delayed job may hold its group: the next one becomes ready.
wake(ARGV[1], ARGV[2], release_group(id, rec))
redis.call('HDEL', K.jobs, id)
redis.call('HDEL', K.payloads, id)
redis.call('HDEL', K.results, id)
return rec.st
