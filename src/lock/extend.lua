-- Extends the lease held by ARGV[1].
-- KEYS[1]: owner   ARGV[1]: token   ARGV[2]: new ttl ms
-- Returns: 1 when extended, 0 when the token does not hold the lock
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
