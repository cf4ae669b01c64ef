-- Fails a leased job (prelude: queue.lua); also used to give back the jobs of a
-- consumer whose stream ended.
-- ARGV[1]: wake channel  ARGV[2]: queue name  ARGV[3]: id  ARGV[4]: lease token
-- ARGV[5]: error text    ARGV[6]: '1' to dead-letter now
-- ARGV[7]: retry after this many ms, or -1 for the job's backoff
-- ARGV[8]: '1' when the lease never reached a client (a hand-off whose consumer
-- left first): the job goes back to its place in the queue as if never leased,
-- with no attempt counted and no error recorded (ARGV[5..7] are not used)
-- Returns: { 0 } when the token was not the job's current lease (nothing changed),
--          else { 1, new state, due ms }
local now, usec = now_ms()
local id = ARGV[3]
local rec = load(id)
if not rec or rec.st ~= 'active' or rec.tok ~= ARGV[4] then
  return { 0 }
end
redis.call('ZREM', K.active, id)
if ARGV[8] == '1' then
  rec.att = rec.att - 1
  rec.tok = ''
  make_ready(id, rec, rec.seq)
  save(id, rec)
  wake(ARGV[1], ARGV[2], 1)
  return { 1, rec.st, 0 }
end
local state, due = fail(id, rec, ARGV[5], ARGV[6] == '1', tonumber(ARGV[7]), now, usec)
if state == 'waiting' then
  wake(ARGV[1], ARGV[2], 1)
elseif state == 'dead' and rec.g ~= '' then
  wake(ARGV[1], ARGV[2], 1)
end
return { 1, state, due }
