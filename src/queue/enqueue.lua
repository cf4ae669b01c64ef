-- Enqueues jobs (prelude: queue.lua).
-- ARGV[1]: wake channel   ARGV[2]: queue name   ARGV[3]: n, the number of jobs
-- then per job 5 values: id, payload, record (cmsgpack, options only), delay ms,
-- deliver-at ms since the epoch (0 for none)
-- Returns: per job 3 values: id, 1 when created (0 when the id existed), state
local now = now_ms()
local out = {}
local ready = 0
for i = 0, tonumber(ARGV[3]) - 1 do
  local base = 4 + i * 5
  local id = ARGV[base]
  local existing = load(id)
  if existing then
    out[#out + 1] = id
    out[#out + 1] = 0
    out[#out + 1] = existing.st
  else
    local rec = cmsgpack.unpack(ARGV[base + 2])
    rec.seq = redis.call('HINCRBY', K.meta, 'seq', 1)
    rec.et = now
    rec.att = 0
    rec.tok = ''
    rec.errs = {}
    redis.call('HSET', K.payloads, id, ARGV[base + 1])
    local due = math.max(now + tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4]))
    if due > now then
      rec.st = 'delayed'
      rec.due = due
      redis.call('ZADD', K.delayed, due, id)
    else
      make_ready(id, rec, rec.seq)
      ready = ready + 1
    end
    save(id, rec)
    out[#out + 1] = id
    out[#out + 1] = 1
    out[#out + 1] = rec.st
  end
end
wake(ARGV[1], ARGV[2], ready)
return out
