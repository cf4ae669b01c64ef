-- Runs one read command and returns its reply only when the strings in it add up
-- to at most the limit, so Redwire never takes in a reply it could not send.
-- KEYS: the keys the command reads, in its order
-- ARGV[1]: the limit in bytes
-- ARGV[2]: the command (LRANGE, SMEMBERS, HGETALL, ZRANGE, MGET)
-- ARGV[3..]: the command's arguments after its keys
-- Returns: the command's reply.
-- Errors: "RWTOOLARGE <limit>" when the reply would be larger than the limit.
local args = {}
for _, key in ipairs(KEYS) do
  args[#args + 1] = key
end
for i = 3, #ARGV do
  args[#args + 1] = ARGV[i]
end
local reply = redis.call(ARGV[2], unpack(args))
local limit = tonumber(ARGV[1])
local total = 0
for _, item in ipairs(reply) do
  if type(item) == 'string' then
    total = total + #item
    if total > limit then
      return redis.error_reply('RWTOOLARGE ' .. ARGV[1])
    end
  end
end
return reply
