-- Adds to an integer counter; a counter created by this call gets the time to live.
-- KEYS[1]: the counter
-- ARGV[1]: the delta (a signed 64-bit integer)
-- ARGV[2]: time to live in milliseconds for a new counter, '0' for none
-- Returns: { new value as a decimal string, 1 when this call created the counter
-- else 0 }. The string, not INCRBY's reply: Lua numbers are doubles, so a value
-- past 2^53 would come back rounded.
-- Errors: WRONGTYPE, or "not an integer" / "overflow" from INCRBY.
local created = redis.call('EXISTS', KEYS[1]) == 0
redis.call('INCRBY', KEYS[1], ARGV[1])
if created and ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return { redis.call('GET', KEYS[1]), created and 1 or 0 }
