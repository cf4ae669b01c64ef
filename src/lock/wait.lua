-- Keeps a waiter counted (for Describe) while it still waits. XX: a waiter that
-- was granted (acquire.lua removes its ticket) or gave up is never added back.
-- KEYS[1]: waiters (zset: waiter ticket -> ms until which it counts as waiting)
-- ARGV[1]: waiter ticket   ARGV[2]: ms it counts as waiting from now
-- Returns: 1 when the ticket was still there, 0 otherwise
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
