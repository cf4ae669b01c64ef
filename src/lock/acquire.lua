-- Grants a lock when it is free, with a fencing token from the same atomic step.
-- KEYS[1]: owner (hash: token, fence; expires with the lease)
-- KEYS[2]: fencing counter (never expires)
-- KEYS[3]: waiters (zset: waiter ticket -> ms until which it counts as waiting)
-- ARGV[1]: token   ARGV[2]: ttl ms   ARGV[3]: waiter ticket, or '' when not waiting
-- ARGV[4]: ms a waiter counts as waiting before it must show up again
-- ARGV[5]: '1' to grant no fencing token below this node's clock in ms since the
--          epoch (Redlock: a node restarted without its data would otherwise
--          count again from 1); '0' for the plain counter
-- Returns: { 1, fencing token, ttl ms } when granted (or already granted to this
--          token: an idempotent retry), { 0, 0, ms until the current lease ends }
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local holder = redis.call('HGET', KEYS[1], 'token')
if holder == ARGV[1] then
  return { 1, tonumber(redis.call('HGET', KEYS[1], 'fence')), redis.call('PTTL', KEYS[1]) }
end
if holder then
  if ARGV[3] ~= '' then
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[3])
  end
  return { 0, 0, redis.call('PTTL', KEYS[1]) }
end
local fence = redis.call('INCR', KEYS[2])
if ARGV[5] == '1' and fence < now then
  fence = now
  redis.call('SET', KEYS[2], fence)
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'fence', fence)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[3])
end
return { 1, fence, tonumber(ARGV[2]) }
