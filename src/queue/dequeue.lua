-- Leases up to ARGV[1] jobs (prelude: queue.lua). Expired leases and due delayed
-- jobs are handled first, so a queue works even without the background reaper.
-- ARGV[1]: most jobs   ARGV[2]: lease ms
-- Returns: { hint, id1, payload1, record1, id2, ... } where hint is the ms until
-- more may be ready: when the rate limit cut the batch short, until it frees a
-- slot; when no job was leased, until a delayed job falls due or a lease expires;
-- otherwise -1.
local now, usec = now_ms()
expire_leases(now, usec, 100)
promote_due(now, 1000)
local out = { -1 }
local meta = redis.call('HMGET', K.meta, 'paused', 'rate_max', 'rate_window')
if meta[1] == '1' then
  return out
end
local want = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local rate_max = tonumber(meta[2] or '0') or 0
local window = 0
local rate_limited = false
if rate_max > 0 then
  window = tonumber(meta[3])
  redis.call('ZREMRANGEBYSCORE', K.rate, '-inf', now - window)
  local allowed = rate_max - redis.call('ZCARD', K.rate)
  if allowed <= 0 then
    local oldest = redis.call('ZRANGE', K.rate, 0, 0, 'WITHSCORES')
    out[1] = tonumber(oldest[2]) + window - now + 1
    return out
  end
  rate_limited = allowed < want
  want = math.min(want, allowed)
end
local popped = redis.call('ZPOPMIN', K.waiting, want)
local ids = {}
for i = 1, #popped, 2 do
  ids[#ids + 1] = popped[i]
end
if #ids > 0 then
  -- One counter bump reserves a lease token for every popped job; one command per
  -- hash or set serves the whole batch.
  local token = redis.call('HINCRBY', K.meta, 'lease', #ids) - #ids
  local blobs = hmget_many(K.jobs, ids)
  local payloads = hmget_many(K.payloads, ids)
  local due = now + lease
  local records, leases, rates = {}, {}, {}
  for i, id in ipairs(ids) do
    token = token + 1
    if blobs[i] then
      local rec = cmsgpack.unpack(blobs[i])
      rec.att = rec.att + 1
      rec.tok = tostring(token)
      rec.st = 'active'
      rec.due = due
      local blob = cmsgpack.pack(rec)
      records[#records + 1] = id
      records[#records + 1] = blob
      leases[#leases + 1] = due
      leases[#leases + 1] = id
      if rate_max > 0 then
        rates[#rates + 1] = now
        rates[#rates + 1] = rec.tok
      end
      out[#out + 1] = id
      out[#out + 1] = payloads[i] or ''
      out[#out + 1] = blob
    end
  end
  call_many('HSET', K.jobs, records)
  call_many('ZADD', K.active, leases)
  call_many('ZADD', K.rate, rates)
end
if rate_limited and #out > 1 then
  local oldest = redis.call('ZRANGE', K.rate, 0, 0, 'WITHSCORES')
  out[1] = tonumber(oldest[2]) + window - now + 1
elseif #out == 1 then
  local soonest = nil
  for _, set in ipairs({ K.delayed, K.active }) do
    local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    if first[2] and (soonest == nil or tonumber(first[2]) < soonest) then
      soonest = tonumber(first[2])
    end
  end
  if soonest then
    out[1] = math.max(soonest - now, 1)
  end
end
return out
