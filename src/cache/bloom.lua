-- Shared by bloom_add.lua and bloom_contains.lua (prepended to each at build time).
-- A Bloom filter is a plain Redis string: a 12-byte header ('RWBF', then m and k as
-- big-endian u32) followed by m bits. The bit positions of an item are
-- (h1 + i*h2) mod m for i in 0..k-1, with h1 and h2 taken from SHA-1 of the item.
local HEADER_BITS = 96

-- Returns m, k of the filter at key, or nil plus an error reply when the key holds
-- something else.
local function bloom_header(key)
  local header = redis.call('GETRANGE', key, 0, 11)
  if string.len(header) ~= 12 or string.sub(header, 1, 4) ~= 'RWBF' then
    return nil, nil, redis.error_reply('RWPRECONDITION the key holds a value that is not a Bloom filter')
  end
  local m, k = struct.unpack('>I4I4', string.sub(header, 5, 12))
  return m, k, nil
end

-- Returns the k bit offsets (header included) of item in a filter of m bits.
local function bloom_bits(item, m, k)
  local digest = redis.sha1hex(item)
  local h1 = tonumber(string.sub(digest, 1, 8), 16)
  local h2 = tonumber(string.sub(digest, 9, 16), 16)
  local bits = {}
  for i = 0, k - 1 do
    bits[i + 1] = HEADER_BITS + (h1 + i * h2) % m
  end
  return bits
end
