-- Compare-and-set: write a string only when the key holds exactly the expected value.
-- KEYS[1]: the key
-- ARGV[1]: the expected current value
-- ARGV[2]: the new value
-- ARGV[3]: time to live in milliseconds, '0' for none
-- ARGV[4]: '1' to keep the key's current time to live (only when ARGV[3] is '0')
-- Returns: 1 when written, 0 when the key was absent or held another value.
-- Errors: WRONGTYPE when the key is not a string.
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return 0
end
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
elseif ARGV[4] == '1' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
