-- Shared by every queue script (prepended at build time). Every queue script gets
-- the same KEYS, built by QueueKeys in Rust, all with the queue's hash tag:
--   KEYS[1]  jobs       HASH id -> job record (cmsgpack map, fields below)
--   KEYS[2]  payloads   HASH id -> payload bytes
--   KEYS[3]  results    HASH id -> result bytes (kept completed jobs)
--   KEYS[4]  waiting    ZSET id -> (1000 - priority) * 2^40 + sequence
--   KEYS[5]  delayed    ZSET id -> due time (ms)
--   KEYS[6]  active     ZSET id -> lease deadline (ms)
--   KEYS[7]  dead       ZSET id -> time of death (ms)
--   KEYS[8]  completed  ZSET id -> removal time (ms)
--   KEYS[9]  backlog    ZSET (all scores 0) "group\0seq(16 hex)\0id": jobs queued behind
--                        their group's current job
--   KEYS[10] groups     HASH group -> id of the group's job that is waiting, delayed
--                        for retry, or active (at most one per group)
--   KEYS[11] meta       HASH seq, lease (counters), paused, rate_max, rate_window
--   KEYS[12] rate       ZSET lease token -> start time (ms): the rate limit's log
-- Job record fields: st state, att attempts (deliveries), max max attempts, pr
-- priority, seq enqueue sequence, g group, bx exponential (0/1), bd backoff ms, bc
-- backoff cap ms, bj jitter per mille, kc keep-completed ms, et enqueued ms, due (ms:
-- ready time when delayed, lease deadline when active, removal when completed), tok
-- lease token, errs last errors, at attributes.
local K = {
  jobs = KEYS[1], payloads = KEYS[2], results = KEYS[3], waiting = KEYS[4],
  delayed = KEYS[5], active = KEYS[6], dead = KEYS[7], completed = KEYS[8],
  backlog = KEYS[9], groups = KEYS[10], meta = KEYS[11], rate = KEYS[12],
}
local MAX_ERRORS = 10
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
  seq = seq or redis.call('HINCRBY', K.meta, 'seq', 1)
  redis.call('ZADD', K.waiting, (1000 - rec.pr) * PRIORITY_SPAN + seq, id)
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
  local seq = redis.call('HINCRBY', K.meta, 'seq', 1)
  redis.call('ZADD', K.waiting, (1000 - next_rec.pr) * PRIORITY_SPAN + seq, next_id)
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
    rec.st = 'dead'
    rec.due = 0
    redis.call('ZADD', K.dead, now, id)
    release_group(id, rec)
    save(id, rec)
    return 'dead', 0
  end
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
    redis.call('PUBLISH', channel, count .. ' ' .. queue)
  end
end
