-- Tests items against a Bloom filter (layout and hashing in bloom.lua, prepended).
-- KEYS[1]: the filter
-- ARGV[1..n]: the items
-- Returns: one integer per item: 0 when surely absent, 1 when probably present.
--          All 0 when the key does not exist.
-- Errors: RWPRECONDITION when the key holds something other than a Bloom filter.
local result = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 1, #ARGV do
    result[i] = 0
  end
  return result
end
local m, k, err = bloom_header(KEYS[1])
if err then
  return err
end
for i = 1, #ARGV do
  local present = 1
  for _, bit in ipairs(bloom_bits(ARGV[i], m, k)) do
    if redis.call('GETBIT', KEYS[1], bit) == 0 then
      present = 0
      break
    end
  end
  result[i] = present
end
return result
