-- Deletes up to ARGV[2] jobs of one kind (prelude: queue.lua). Called repeatedly
-- until it returns 0, so one call never blocks Redis for long.
-- ARGV[1]: 'pending' (waiting, backlog and delayed jobs) or 'dead'
-- ARGV[2]: most jobs per call
-- Returns: how many jobs were deleted
local limit = tonumber(ARGV[2])
local function drop(id)
  redis.call('HDEL', K.jobs, id)
  redis.call('HDEL', K.payloads, id)
  redis.call('HDEL', K.results, id)
end
local deleted = 0
if ARGV[1] == 'dead' then
  for _, id in ipairs(redis.call('ZRANGE', K.dead, 0, limit - 1)) do
    redis.call('ZREM', K.dead, id)
    drop(id)
    deleted = deleted + 1
  end
  return deleted
end
for _, set in ipairs({ K.waiting, K.delayed }) do
  for _, id in ipairs(redis.call('ZRANGE', set, 0, limit - deleted - 1)) do
    local rec = load(id)
    redis.call('ZREM', set, id)
    if rec and rec.g ~= '' and redis.call('HGET', K.groups, rec.g) == id then
      redis.call('HDEL', K.groups, rec.g)
    end
    drop(id)
    deleted = deleted + 1
  end
  if deleted >= limit then
    return deleted
  end
end
for _, member in ipairs(redis.call('ZRANGE', K.backlog, 0, limit - deleted - 1)) do
  redis.call('ZREM', K.backlog, member)
  local nul = string.find(member, '\0', 1, true)
  drop(string.sub(member, nul + 18))
  deleted = deleted + 1
end
return deleted
