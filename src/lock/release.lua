-- Releases a lock held by ARGV[1]. (Waiters are woken by the caller, which
-- publishes on the main Redis so that Redlock mode wakes them too.)
-- KEYS[1]: owner   ARGV[1]: token
-- Returns: 1 when released, 0 when the token does not hold the lock
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
