-- Enqueues jobs (prelude: queue.lua).
-- ARGV[1]: wake channel   ARGV[2]: queue name   ARGV[3]: n, the number of jobs
-- then per job 5 values: id, payload, record (cmsgpack, options only), delay ms,
-- deliver-at ms since the epoch (0 for none)
-- then t, the number of takers (consumers of this queue waiting in the calling
-- process), and per taker 2 values: most jobs, lease ms; last, the lease token
-- secret (see lease())
-- Returns: per job 3 values: id, 1 when created (0 when the id existed), state
-- after the call (active when handed off); then, when t > 0, what lease() in
-- queue.lua returns for the takers: the jobs go to them straight from this call,
-- with no dequeue.
local now = now_ms()
local ids = batch_ids(5)
local existing = hmget_many(K.jobs, ids)
-- One counter bump reserves a sequence number for every new job (an id repeated in
-- this call is one job); one command per hash or set serves the whole batch (jobs
-- of a group go one by one).
local fresh, counted = 0, {}
for i, id in ipairs(ids) do
  if not existing[i] and not counted[id] then
    counted[id] = true
    fresh = fresh + 1
  end
end
local seq = redis.call('HINCRBY', K.meta, META.seq, fresh) - fresh
count(META.enqueued, fresh)
-- Jobs created by this call, so a repeated id finds the first one.
local created = {}
local payloads, waiting, delayed = {}, {}, {}
-- The reply; a created job's state is its record until the hand-off is done.
local out = {}
local ready = 0
for i, id in ipairs(ids) do
  local base = 4 + (i - 1) * 5
  if created[id] or existing[i] then
    out[#out + 1] = id
    out[#out + 1] = 0
    out[#out + 1] = created[id] and created[id].rec or cmsgpack.unpack(existing[i]).st
  else
    local rec = cmsgpack.unpack(ARGV[base + 2])
    seq = seq + 1
    rec.seq = seq
    rec.et = now
    rec.att = 0
    rec.tok = ''
    rec.errs = {}
    payloads[#payloads + 1] = id
    payloads[#payloads + 1] = ARGV[base + 1]
    local due = math.max(now + tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4]))
    if due > now then
      rec.st = 'delayed'
      rec.due = due
      delayed[#delayed + 1] = due
      delayed[#delayed + 1] = id
    elseif rec.g ~= '' then
      make_ready(id, rec, rec.seq)
      ready = ready + 1
    else
      -- What make_ready does for a job without a group, with the ZADD batched.
      rec.st = 'waiting'
      rec.due = 0
      waiting[#waiting + 1] = (MAX_PRIORITY - rec.pr) * PRIORITY_SPAN + rec.seq
      waiting[#waiting + 1] = id
      ready = ready + 1
    end
    created[id] = { rec = rec, payload = ARGV[base + 1] }
    out[#out + 1] = id
    out[#out + 1] = 1
    out[#out + 1] = rec
  end
end
call_many('HSET', K.payloads, payloads)
call_many('ZADD', K.waiting, waiting)
call_many('ZADD', K.delayed, delayed)
-- Hand-off: lease to the waiting takers now. lease() writes the records it leases.
local takers_at = 4 + #ids * 5
local wants = {}
for i = 1, tonumber(ARGV[takers_at]) do
  wants[i] = { tonumber(ARGV[takers_at + 2 * i - 1]), tonumber(ARGV[takers_at + 2 * i]) }
end
local handed = #wants > 0 and lease(now, wants, created, ARGV[takers_at + 2 * #wants + 1])
-- Only the new jobs still ready need a consumer woken.
local records = {}
for id, job in pairs(created) do
  if job.rec.st == 'active' then
    ready = ready - 1
  else
    records[#records + 1] = id
    records[#records + 1] = cmsgpack.pack(job.rec)
  end
end
call_many('HSET', K.jobs, records)
wake(ARGV[1], ARGV[2], ready)
for i = 3, #out, 3 do
  if type(out[i]) == 'table' then
    out[i] = out[i].st
  end
end
if handed then
  for _, value in ipairs(handed) do
    out[#out + 1] = value
  end
end
return out
