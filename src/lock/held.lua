-- Keeps the index of held locks (for ListLocks) in step with one lease.
-- KEYS[1]: leases (sorted set: resource -> lease end, ms)
-- KEYS[2]: tokens (hash: resource -> holder's token)
-- ARGV[1]: resource   ARGV[2]: token   ARGV[3]: grant, renew or release
-- ARGV[4]: lease length ms (grant, renew)
-- Updates arrive in any order (they are sent after the lock's own script, from
-- separate tasks), so each checks the token: a renewal or release of an old
-- lease never overwrites or removes the current holder's entry.
-- Returns: 1 when the index changed, 0 otherwise
local resource, token, what = ARGV[1], ARGV[2], ARGV[3]
local indexed = redis.call('HGET', KEYS[2], resource)
if what == 'release' then
  if indexed ~= token then
    return 0
  end
  redis.call('HDEL', KEYS[2], resource)
  redis.call('ZREM', KEYS[1], resource)
  return 1
end
if what == 'renew' and indexed and indexed ~= token then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], resource, token)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), resource)
-- A few leases that ended without a release (their holder vanished) go, so the
-- index holds about as many entries as there are held locks.
local ended = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 8)
for _, gone in ipairs(ended) do
  redis.call('ZREM', KEYS[1], gone)
  redis.call('HDEL', KEYS[2], gone)
end
return 1
