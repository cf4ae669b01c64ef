-- Adds to members' scores, all or nothing. Inside MULTI/EXEC a ZINCRBY that
-- Redis refuses (inf + -inf is not a number) fails alone while the others are
-- written; so this script first computes every resulting score, a member given
-- twice adding up, and writes only when none of them is NaN.
-- KEYS[1]: the sorted set
-- ARGV: member, increment, member, increment, ... (increments as Redis spells
--       doubles: digits, 'inf' or '-inf')
-- Returns { -1, added, score1, score2, ... } when written (added: members that
-- were new; scores as strings, in request order), or { i } (0-based) when pair i
-- would make its score NaN, with nothing written.
-- Errors: WRONGTYPE when the key holds something else.

local function number(text)
  if text == 'inf' or text == '+inf' then
    return math.huge
  elseif text == '-inf' then
    return -math.huge
  end
  return tonumber(text)
end

local scores = {}
local added = 0
for i = 1, #ARGV, 2 do
  local member = ARGV[i]
  local current = scores[member]
  if current == nil then
    local stored = redis.call('ZSCORE', KEYS[1], member)
    if stored then
      current = number(stored)
    else
      current = 0
      added = added + 1
    end
  end
  local next = current + number(ARGV[i + 1])
  if next ~= next then
    return { (i - 1) / 2 }
  end
  scores[member] = next
end

local reply = { -1, added }
for i = 1, #ARGV, 2 do
  reply[#reply + 1] = redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
return reply
