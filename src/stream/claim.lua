-- Claims idle pending entries of other consumers of a group for a consumer,
-- dead-lettering instead
-- those already delivered max_deliveries times (the group's policy): such an entry
-- is acked and copied, with its origin, to the dead-letter stream. XACK comes first,
-- so an entry is dead-lettered exactly once even when several Redwire instances
-- claim at the same moment.
-- KEYS[1]: the stream   KEYS[2]: its dead-letter stream   KEYS[3]: group settings hash
-- ARGV[1]: group   ARGV[2]: consumer   ARGV[3]: min idle ms   ARGV[4]: user stream name
-- ARGV[5]: 'scan' or 'ids'
-- scan: ARGV[6]: start (XPENDING range start, '-' or '(<id>'), ARGV[7]: count
-- ids:  ARGV[6..]: entry ids
-- Returns: { next start ('0-0' when the scan is complete), claimed entries
--            { id, { field, value, ... }, deliveries }..., dead-lettered ids }
local group, consumer, idle = ARGV[1], ARGV[2], tonumber(ARGV[3])
local max = tonumber(redis.call('HGET', KEYS[3], group) or '0') or 0
local candidates = {}
local next_start = '0-0'
if ARGV[5] == 'scan' then
  local count = tonumber(ARGV[7])
  candidates = redis.call('XPENDING', KEYS[1], group, 'IDLE', idle, ARGV[6], '+', count)
  if #candidates == count then
    next_start = '(' .. candidates[#candidates][1]
  end
else
  for i = 6, #ARGV do
    local p = redis.call('XPENDING', KEYS[1], group, 'IDLE', idle, ARGV[i], ARGV[i], 1)[1]
    if p then
      candidates[#candidates + 1] = p
    end
  end
end
local claim, dead = {}, {}
for _, p in ipairs(candidates) do
  local id, owner, deliveries = p[1], p[2], tonumber(p[4])
  if owner == consumer then
    -- Never claim from oneself: that would only inflate the delivery count of an
    -- entry this consumer is still working on.
  elseif max > 0 and deliveries >= max then
    if redis.call('XACK', KEYS[1], group, id) == 1 then
      local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
      local record = { 'dead.stream', ARGV[4], 'dead.id', id, 'dead.group', group,
                       'dead.deliveries', deliveries, 'dead.consumer', owner }
      if entry then
        for _, v in ipairs(entry[2]) do
          record[#record + 1] = v
        end
      end
      redis.call('XADD', KEYS[2], '*', unpack(record))
      dead[#dead + 1] = id
    end
  else
    claim[#claim + 1] = id
  end
end
local out = {}
if #claim > 0 then
  local entries = redis.call('XCLAIM', KEYS[1], group, consumer, idle, unpack(claim))
  for _, e in ipairs(entries) do
    if e and e[2] then
      local p = redis.call('XPENDING', KEYS[1], group, e[1], e[1], 1)[1]
      out[#out + 1] = { e[1], e[2], p and p[4] or 1 }
    end
  end
end
return { next_start, out, dead }
