-- Extends a lease (prelude: queue.lua).
-- ARGV[1]: id   ARGV[2]: lease token   ARGV[3]: new lease length in ms from now
-- Returns: { 0 } when the token is not the job's current lease, else { 1, deadline ms }
local now = now_ms()
local rec = load(ARGV[1])
if not rec or rec.st ~= 'active' or rec.tok ~= ARGV[2] then
  return { 0 }
end
rec.due = now + tonumber(ARGV[3])
redis.call('ZADD', K.active, rec.due, ARGV[1])
save(ARGV[1], rec)
return { 1, rec.due }
