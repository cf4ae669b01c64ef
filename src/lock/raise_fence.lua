-- Redlock: raises a node's fencing counter to at least the granted value, so any
-- later majority (which overlaps this one) grants a higher token, and records the
-- granted value on the node's lease (for idempotent retries).
-- KEYS[1]: fencing counter   KEYS[2]: owner
-- ARGV[1]: the granted fencing token   ARGV[2]: the holder's token
-- Returns: the counter after the call
local granted = tonumber(ARGV[1])
if redis.call('HGET', KEYS[2], 'token') == ARGV[2] then
  redis.call('HSET', KEYS[2], 'fence', granted)
end
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < granted then
  redis.call('SET', KEYS[1], granted)
  return granted
end
return current
