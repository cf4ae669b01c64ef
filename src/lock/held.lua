-- Brings the index of held locks (for ListLocks) up to date with a batch of
-- lease changes.
-- KEYS[1]: leases (sorted set: resource -> lease end, ms)
-- KEYS[2]: tokens (hash: resource -> holder's token)
-- ARGV: groups of four: resource, token, grant|renew|release, lease length ms
-- Instances send their batches independently, so each change checks the token:
-- a renewal or release of an old lease never overwrites or removes the current
-- holder's entry.
-- Returns: how many changes applied
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local applied = 0
for i = 1, #ARGV, 4 do
  local resource, token, what = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local indexed = redis.call('HGET', KEYS[2], resource)
  if what == 'release' then
    if indexed == token then
      redis.call('HDEL', KEYS[2], resource)
      redis.call('ZREM', KEYS[1], resource)
      applied = applied + 1
    end
  elseif what == 'grant' or not indexed or indexed == token then
    redis.call('HSET', KEYS[2], resource, token)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i + 3]), resource)
    applied = applied + 1
  end
end
-- Leases that ended without a release (their holder vanished) go, a bounded
-- number per batch, so the index holds about as many entries as held locks.
local ended = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 64)
for _, gone in ipairs(ended) do
  redis.call('ZREM', KEYS[1], gone)
  redis.call('HDEL', KEYS[2], gone)
end
return applied
