-- Tests items against a Bloom filter written by bloom_add.lua (same layout).
-- KEYS[1]: the filter
-- ARGV[1..n]: the items
-- Returns: one integer per item: 0 when surely absent, 1 when probably present.
--          All 0 when the key does not exist.
-- Errors: RWPRECONDITION when the key holds something other than a Bloom filter.
local HEADER_BITS = 96
local result = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 1, #ARGV do
    result[i] = 0
  end
  return result
end
local header = redis.call('GETRANGE', KEYS[1], 0, 11)
if string.len(header) ~= 12 or string.sub(header, 1, 4) ~= 'RWBF' then
  return redis.error_reply('RWPRECONDITION the key holds a value that is not a Bloom filter')
end
local m, k = struct.unpack('>I4I4', string.sub(header, 5, 12))
for i = 1, #ARGV do
  local digest = redis.sha1hex(ARGV[i])
  local h1 = tonumber(string.sub(digest, 1, 8), 16)
  local h2 = tonumber(string.sub(digest, 9, 16), 16)
  local present = 1
  for j = 0, k - 1 do
    if redis.call('GETBIT', KEYS[1], HEADER_BITS + (h1 + j * h2) % m) == 0 then
      present = 0
      break
    end
  end
  result[i] = present
end
return result
