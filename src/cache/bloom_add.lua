-- Adds items to a Bloom filter kept in a plain Redis string: a 12-byte header
-- ('RWBF', then m and k as big-endian u32) followed by m bits. Bit positions are
-- (h1 + i*h2) mod m for i in 0..k-1, with h1 and h2 taken from SHA-1 of the item.
-- KEYS[1]: the filter
-- ARGV[1]: m, the number of bits (used only when creating the filter)
-- ARGV[2]: k, the number of hash functions (used only when creating the filter)
-- ARGV[3..n]: the items
-- Returns: one integer per item: 1 when the filter surely lacked it before, else 0.
-- Errors: RWPRECONDITION when the key holds something other than a Bloom filter.
local HEADER_BITS = 96
local m, k
if redis.call('EXISTS', KEYS[1]) == 0 then
  m = tonumber(ARGV[1])
  k = tonumber(ARGV[2])
  redis.call('SETRANGE', KEYS[1], 0, 'RWBF' .. struct.pack('>I4I4', m, k))
  -- Allocate the whole bitmap at once instead of growing it bit by bit.
  redis.call('SETBIT', KEYS[1], HEADER_BITS + m - 1, 0)
else
  local header = redis.call('GETRANGE', KEYS[1], 0, 11)
  if string.len(header) ~= 12 or string.sub(header, 1, 4) ~= 'RWBF' then
    return redis.error_reply('RWPRECONDITION the key holds a value that is not a Bloom filter')
  end
  m, k = struct.unpack('>I4I4', string.sub(header, 5, 12))
end
local added = {}
for i = 3, #ARGV do
  local digest = redis.sha1hex(ARGV[i])
  local h1 = tonumber(string.sub(digest, 1, 8), 16)
  local h2 = tonumber(string.sub(digest, 9, 16), 16)
  local new = 0
  for j = 0, k - 1 do
    if redis.call('SETBIT', KEYS[1], HEADER_BITS + (h1 + j * h2) % m, 1) == 0 then
      new = 1
    end
  end
  added[#added + 1] = new
end
return added
