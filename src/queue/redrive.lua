-- Moves dead jobs back to waiting with their attempts reset (prelude: queue.lua).
-- ARGV[1]: wake channel   ARGV[2]: queue name   ARGV[3]: most jobs when no ids given
-- ARGV[4..]: the dead job ids; none means the oldest ARGV[3] dead jobs
-- Returns: how many jobs were redriven
local ids = {}
for i = 4, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then
  ids = redis.call('ZRANGE', K.dead, 0, tonumber(ARGV[3]) - 1)
end
local moved = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', K.dead, id) == 1 then
    local rec = load(id)
    if rec then
      rec.att = 0
      make_ready(id, rec)
      save(id, rec)
      moved = moved + 1
    end
  end
end
wake(ARGV[1], ARGV[2], moved)
return moved
