-- How long the oldest job ready for delivery has waited (prelude: queue.lua), for
-- the metrics. Waiting jobs are ordered by priority level, then by sequence, so
-- the oldest of each level is the first of its level: this reads one job per
-- level that has jobs, at most ARGV[1] levels (the highest first).
-- Returns: ms since that job was enqueued (Redis time), or -1 when none waits
local levels = tonumber(ARGV[1])
local now = now_ms()
local oldest = -1
local from = '-inf'
for _ = 1, levels do
  local head = redis.call('ZRANGEBYSCORE', K.waiting, from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #head == 0 then
    break
  end
  local rec = load(head[1])
  if rec and rec.et and (oldest < 0 or rec.et < oldest) then
    oldest = rec.et
  end
  local level = math.floor(tonumber(head[2]) / PRIORITY_SPAN)
  from = string.format('%.0f', (level + 1) * PRIORITY_SPAN)
end
if oldest < 0 then
  return -1
end
return math.max(0, now - oldest)
