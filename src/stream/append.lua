-- Appends a batch that has explicit ids, all or nothing. Inside MULTI/EXEC an XADD
-- that Redis refuses (id not above the stream's last) fails alone while the others
-- are written; so this script first checks every id as XADD would, the ones Redis
-- chooses included, and writes only when all of them pass.
-- KEYS[1]: the stream
-- ARGV[1]: t, the number of trim arguments; ARGV[2 .. 1+t]: trim arguments for XADD
-- then per entry: id ('*' when Redis chooses), field count n, then n name/value pairs
-- Returns { -1, id1, id2, ... } when appended, or { i } (0-based) when entry i's id
-- is not above the id before it, with nothing written.

-- Compares two decimal strings (no size limit): -1, 0 or 1.
local function compare(a, b)
  a = string.gsub(a, '^0+', '')
  b = string.gsub(b, '^0+', '')
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end

local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if ms then
    return ms, seq
  end
  return id, '0'
end

local last_ms, last_seq = '0', '0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      last_ms, last_seq = split(info[i + 1])
    end
  end
end
local time = redis.call('TIME')
local now_ms = time[1] .. string.format('%03d', math.floor(tonumber(time[2]) / 1000))

local trim_count = tonumber(ARGV[1])
local first_entry = 2 + trim_count
local entries = {}
local at = first_entry
local index = 0
while at <= #ARGV do
  local id = ARGV[at]
  local fields = tonumber(ARGV[at + 1])
  if id == '*' then
    if compare(now_ms, last_ms) > 0 then
      last_ms, last_seq = now_ms, '0'
    else
      last_seq = tostring(tonumber(last_seq) + 1)
    end
  else
    local ms, seq = split(id)
    local order = compare(ms, last_ms)
    if order < 0 or (order == 0 and compare(seq, last_seq) <= 0) then
      return { index }
    end
    last_ms, last_seq = ms, seq
  end
  entries[#entries + 1] = { at, fields }
  at = at + 2 + 2 * fields
  index = index + 1
end

local out = { -1 }
for _, entry in ipairs(entries) do
  local args = { 'XADD', KEYS[1] }
  for i = 2, first_entry - 1 do
    args[#args + 1] = ARGV[i]
  end
  local start, fields = entry[1], entry[2]
  for i = start, start + 1 + 2 * fields do
    if i ~= start + 1 then
      args[#args + 1] = ARGV[i]
    end
  end
  out[#out + 1] = redis.call(unpack(args))
end
return out
