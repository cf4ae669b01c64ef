-- Leases up to ARGV[1] jobs (prelude: queue.lua). Expired leases and due delayed
-- jobs are handled first, so a queue works even without the background reaper.
-- ARGV[1]: most jobs   ARGV[2]: lease ms   ARGV[3]: lease token secret (see lease())
-- Returns what lease() in queue.lua returns: { hint, id1, payload1, record1, ... }.
local now, usec = now_ms()
expire_leases(now, usec, 100)
promote_due(now, 1000)
return lease(now, { { tonumber(ARGV[1]), tonumber(ARGV[2]) } }, {}, ARGV[3])
