-- Shared by every queue script. Before it comes what Rust generates from the facts
-- both sides share (`script_facts` in store.rs): the table K naming the KEYS in the
-- order of QueueKeys::NAMES, the table META naming the fields of K.meta
-- (QueueMeta), MAX_PRIORITY, MAX_ERRORS and wake_message(count, name).
-- Every queue script gets the same KEYS, all with the queue's hash tag:
--   KEYS[1]  jobs       HASH id -> job record (cmsgpack map, fields below)
--   KEYS[2]  payloads   HASH id -> payload bytes
--   KEYS[3]  results    HASH id -> result bytes (kept completed jobs)
--   KEYS[4]  waiting    ZSET id -> (MAX_PRIORITY - priority) * 2^40 + sequence
--   KEYS[5]  delayed    ZSET id -> due time (ms)
--   KEYS[6]  active     ZSET id -> lease deadline (ms)
--   KEYS[7]  dead       ZSET id -> time of death (ms)
--   KEYS[8]  completed  ZSET id -> removal time (ms)
--   KEYS[9]  backlog    ZSET (all scores 0) "group\0seq(16 hex)\0id": jobs queued behind
--                        their group's current job
--   KEYS[10] groups     HASH group -> id of the group's job that is waiting, delayed
--                        for retry, or active (at most one per group)
--   KEYS[11] meta       HASH META.seq, META.lease (counters), META.paused,
--                        META.rate_max, META.rate_window
--   KEYS[12] rate       ZSET lease token -> start time (ms): the rate limit's log
--   KEYS[13] history    HASH the last hour of the HISTORY counters, per minute: for
--                        counter f and slot s = minute % 60, `f:s` is its count and
--                        `f:s@` the minute it counts; a slot of an older minute is
--                        reset when its minute comes round, so at most 60 minutes
--                        per counter are kept
-- Job record fields (JobRecord's serde names in record.rs; a unit test checks that
-- every record field a script uses is one): st state, att attempts (deliveries), max
-- max attempts, pr priority, seq enqueue sequence, g group, bx exponential (0/1), bd
-- backoff ms, bc backoff cap ms, bj jitter per mille, kc keep-completed ms, et
-- enqueued ms, due (ms: ready time when delayed, lease deadline when active, removal
-- when completed), tok lease token, errs last errors, at attributes, tp and ts
-- the producer's W3C traceparent and tracestate (absent when it had none).
local PRIORITY_SPAN = 1099511627776 -- 2^40 sequence numbers per priority level

-- Redis server time: milliseconds, and the microsecond part (a little entropy).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), tonumber(t[2])
end

-- Values per variadic command: a big batch is split so unpack() never overflows
-- Lua's stack. Even, so field/value and score/member pairs stay together.
local CHUNK = 1000

-- `cmd key args...` for a flat list of arguments, in chunks. Batches pay one Redis
-- command per chunk instead of one per job; each command call in a script costs
-- about as much as the work it does for a job.
local function call_many(cmd, key, args)
  for i = 1, #args, CHUNK do
    redis.call(cmd, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
end

-- HMGET for a list of fields of any length; missing fields are false.
local function hmget_many(key, fields)
  local values = {}
  for i = 1, #fields, CHUNK do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + CHUNK - 1, #fields)))
    for j = 1, #part do
      values[#values + 1] = part[j]
    end
  end
  return values
end

-- The ids of a batch call's ARGV[3] items, `stride` values each from ARGV[4], the
-- id first (enqueue and ack).
local function batch_ids(stride)
  local ids = {}
  for i = 0, tonumber(ARGV[3]) - 1 do
    ids[#ids + 1] = ARGV[4 + i * stride]
  end
  return ids
end

local function load(id)
  local blob = redis.call('HGET', K.jobs, id)
  if not blob then
    return nil
  end
  return cmsgpack.unpack(blob)
end

-- The minute this script counts its events in (read once per call).
local history_minute = nil

-- Adds `n` to the queue's event counter `field` (one of META's counters), and
-- to its count of this minute when it is one of HISTORY.
local function count(field, n)
  if n <= 0 then
    return
  end
  redis.call('HINCRBY', K.meta, field, n)
  if not HISTORY[field] then
    return
  end
  history_minute = history_minute or math.floor(now_ms() / 60000)
  local slot = field .. ':' .. (history_minute % 60)
  local minute = string.format('%d', history_minute)
  if redis.call('HGET', K.history, slot .. '@') == minute then
    redis.call('HINCRBY', K.history, slot, n)
  else
    redis.call('HSET', K.history, slot, n, slot .. '@', minute)
  end
end

local function save(id, rec)
  redis.call('HSET', K.jobs, id, cmsgpack.pack(rec))
end

local function backlog_member(rec, id)
  return rec.g .. '\0' .. string.format('%016x', rec.seq) .. '\0' .. id
end

-- Makes a job deliverable: into waiting, or into its group's backlog when another
-- job of the group holds the group. `seq` orders it among its priority (a fresh
-- sequence number when nil).
local function make_ready(id, rec, seq)
  rec.st = 'waiting'
  rec.due = 0
  if rec.g ~= '' then
    local holder = redis.call('HGET', K.groups, rec.g)
    if holder and holder ~= id then
      redis.call('ZADD', K.backlog, 0, backlog_member(rec, id))
      return
    end
    redis.call('HSET', K.groups, rec.g, id)
  end
  seq = seq or redis.call('HINCRBY', K.meta, META.seq, 1)
  redis.call('ZADD', K.waiting, (MAX_PRIORITY - rec.pr) * PRIORITY_SPAN + seq, id)
end

-- Hands the group of a job that is finished (completed or dead) to the group's next
-- job. Returns 1 when a job became waiting.
local function release_group(id, rec)
  if rec.g == '' or redis.call('HGET', K.groups, rec.g) ~= id then
    return 0
  end
  local head = redis.call('ZRANGEBYLEX', K.backlog, '[' .. rec.g .. '\0', '(' .. rec.g .. '\1', 'LIMIT', 0, 1)[1]
  if not head then
    redis.call('HDEL', K.groups, rec.g)
    return 0
  end
  redis.call('ZREM', K.backlog, head)
  local next_id = string.sub(head, #rec.g + 19)
  local next_rec = load(next_id)
  redis.call('HSET', K.groups, rec.g, next_id)
  local seq = redis.call('HINCRBY', K.meta, META.seq, 1)
  redis.call('ZADD', K.waiting, (MAX_PRIORITY - next_rec.pr) * PRIORITY_SPAN + seq, next_id)
  return 1
end

local function push_error(rec, err)
  if type(rec.errs) ~= 'table' then
    rec.errs = {}
  end
  table.insert(rec.errs, err)
  while #rec.errs > MAX_ERRORS do
    table.remove(rec.errs, 1)
  end
end

-- The retry delay after rec.att failed deliveries.
local function backoff_ms(rec, usec)
  local delay = rec.bd
  if rec.bx == 1 then
    delay = math.min(rec.bc, rec.bd * math.pow(2, math.max(rec.att - 1, 0)))
  end
  if rec.bj > 0 then
    local r = ((usec * 7919 + rec.att * 104729) % 1000) / 1000
    delay = delay - math.floor(delay * rec.bj / 1000 * r)
  end
  return math.floor(delay)
end

-- Fails a job that was just taken out of `active`: dead when permanent or out of
-- attempts, otherwise delayed for its backoff (or retry_after ms when >= 0).
-- Returns the new state and due time.
local function fail(id, rec, err, permanent, retry_after, now, usec)
  push_error(rec, err)
  rec.tok = ''
  if permanent or rec.att >= rec.max then
    count(META.dead_lettered, 1)
    if permanent then
      count(META.dead_rejected, 1)
    end
    rec.st = 'dead'
    rec.due = 0
    redis.call('ZADD', K.dead, now, id)
    release_group(id, rec)
    save(id, rec)
    return 'dead', 0
  end
  count(META.retried, 1)
  local delay = retry_after
  if delay < 0 then
    delay = backoff_ms(rec, usec)
  end
  if delay > 0 then
    rec.st = 'delayed'
    rec.due = now + delay
    redis.call('ZADD', K.delayed, rec.due, id)
  else
    make_ready(id, rec)
  end
  save(id, rec)
  return rec.st, rec.due
end

-- Moves up to `limit` delayed jobs whose time has come to waiting. Returns the count.
local function promote_due(now, limit)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', K.delayed, id)
    local rec = load(id)
    if rec then
      make_ready(id, rec)
      save(id, rec)
    end
  end
  return #due
end

-- Fails up to `limit` jobs whose lease ran out. Returns the count.
local function expire_leases(now, usec, limit)
  local expired = redis.call('ZRANGEBYSCORE', K.active, '-inf', now, 'LIMIT', 0, limit)
  count(META.expired, #expired)
  for _, id in ipairs(expired) do
    redis.call('ZREM', K.active, id)
    local rec = load(id)
    if rec then
      fail(id, rec, 'lease expired', false, -1, now, usec)
    end
  end
  return #expired
end

-- Tells consumers (in every Redwire process) that `count` jobs became ready.
local function wake(channel, queue, count)
  if count > 0 then
    redis.call('PUBLISH', channel, wake_message(count, queue))
  end
end

-- Leases ready jobs: the body of dequeue.lua, and of enqueue.lua when it hands new
-- jobs straight to consumers waiting in the calling process.
-- `wants`: a list of { most jobs, lease ms }, one per taker, served in order from
-- one ZPOPMIN (the first taker's jobs come first in the reply).
-- `known`: id -> { rec, payload } for jobs this call holds in memory, so a job the
-- same call enqueued is not read back. Their records are written here like the rest.
-- `secret`: 128 random bits (hex) from Rust, fresh per call; each lease token is
-- `<secret>.<lease counter>`, so it cannot be guessed and never repeats.
-- Returns { hint, id1, payload1, record1, id2, ... } where hint is the ms until
-- more may be ready: when the rate limit cut the batch short, until it frees a
-- slot; when no job was leased, until a delayed job falls due or a lease expires;
-- otherwise -1.
local function lease(now, wants, known, secret)
  local out = { -1 }
  local meta = redis.call('HMGET', K.meta, META.paused, META.rate_max, META.rate_window)
  if meta[1] == '1' then
    return out
  end
  local want = 0
  for _, w in ipairs(wants) do
    want = want + w[1]
  end
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
  local popped = want > 0 and redis.call('ZPOPMIN', K.waiting, want) or {}
  local ids, unknown = {}, {}
  for i = 1, #popped, 2 do
    ids[#ids + 1] = popped[i]
    if not known[popped[i]] then
      unknown[#unknown + 1] = popped[i]
    end
  end
  if #ids > 0 then
    -- One counter bump reserves a lease token for every popped job; one command per
    -- hash or set serves the whole batch.
    local token = redis.call('HINCRBY', K.meta, META.lease, #ids) - #ids
    local blobs = hmget_many(K.jobs, unknown)
    local payloads = hmget_many(K.payloads, unknown)
    local stored = {}
    for i, id in ipairs(unknown) do
      stored[id] = blobs[i] and { rec = cmsgpack.unpack(blobs[i]), payload = payloads[i] or '' }
    end
    -- The taker whose lease the next job gets, and how many more jobs it takes.
    local taker, room = 1, wants[1][1]
    local records, leases, rates = {}, {}, {}
    for _, id in ipairs(ids) do
      token = token + 1
      local job = known[id] or stored[id]
      if job then
        while room == 0 do
          taker = taker + 1
          room = wants[taker][1]
        end
        room = room - 1
        local rec = job.rec
        rec.att = rec.att + 1
        rec.tok = secret .. '.' .. tostring(token)
        rec.st = 'active'
        rec.due = now + wants[taker][2]
        local blob = cmsgpack.pack(rec)
        records[#records + 1] = id
        records[#records + 1] = blob
        leases[#leases + 1] = rec.due
        leases[#leases + 1] = id
        if rate_max > 0 then
          rates[#rates + 1] = now
          rates[#rates + 1] = rec.tok
        end
        out[#out + 1] = id
        out[#out + 1] = job.payload
        out[#out + 1] = blob
      end
    end
    call_many('HSET', K.jobs, records)
    call_many('ZADD', K.active, leases)
    call_many('ZADD', K.rate, rates)
    count(META.started, #leases / 2)
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
end
