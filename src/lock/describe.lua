-- Reads a lock's state.
-- KEYS[1]: owner   KEYS[2]: fencing counter   KEYS[3]: waiters
-- Returns: { held (1/0), ttl ms (-1 when free), last fencing token, live waiters }
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('EXISTS', KEYS[1])
local ttl = held == 1 and redis.call('PTTL', KEYS[1]) or -1
return { held, ttl, tonumber(redis.call('GET', KEYS[2]) or '0'), redis.call('ZCOUNT', KEYS[3], now, '+inf') }
