-- Background upkeep of one queue (prelude: queue.lua): expires leases, promotes due
-- delayed jobs, removes kept completed jobs past their time. Bounded work per call;
-- safe to run from every Redwire instance at once.
-- ARGV[1]: wake channel   ARGV[2]: queue name   ARGV[3]: most jobs per step
-- Returns: { leases expired, jobs promoted, completed jobs removed }
local now, usec = now_ms()
local limit = tonumber(ARGV[3])
local expired = expire_leases(now, usec, limit)
local promoted = promote_due(now, limit)
local old = redis.call('ZRANGEBYSCORE', K.completed, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(old) do
  redis.call('ZREM', K.completed, id)
  redis.call('HDEL', K.jobs, id)
  redis.call('HDEL', K.payloads, id)
  redis.call('HDEL', K.results, id)
end
wake(ARGV[1], ARGV[2], expired + promoted)
return { expired, promoted, #old }
