-- Adds items to a Bloom filter (layout and hashing in bloom.lua, prepended).
-- KEYS[1]: the filter
-- ARGV[1]: m, the number of bits (used only when creating the filter)
-- ARGV[2]: k, the number of hash functions (used only when creating the filter)
-- ARGV[3..n]: the items
-- Returns: one integer per item: 1 when the filter surely lacked it before, else 0.
-- Errors: RWPRECONDITION when the key holds something other than a Bloom filter.
local m, k, err
if redis.call('EXISTS', KEYS[1]) == 0 then
  m = tonumber(ARGV[1])
  k = tonumber(ARGV[2])
  redis.call('SETRANGE', KEYS[1], 0, 'RWBF' .. struct.pack('>I4I4', m, k))
  -- Allocate the whole bitmap at once instead of growing it bit by bit.
  redis.call('SETBIT', KEYS[1], HEADER_BITS + m - 1, 0)
else
  m, k, err = bloom_header(KEYS[1])
  if err then
    return err
  end
end
local added = {}
for i = 3, #ARGV do
  local new = 0
  for _, bit in ipairs(bloom_bits(ARGV[i], m, k)) do
    if redis.call('SETBIT', KEYS[1], bit, 1) == 0 then
      new = 1
    end
  end
  added[#added + 1] = new
end
return added
