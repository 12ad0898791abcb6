-- A node (re)connects: it keeps its number if the number is free or
-- still its own, else gets a new one. ARGV: 1 number wanted ('' for a
-- new one), 2 instance id (random per process), 3 random base for the
-- counter (used when the engine lost it). Returns the number.
if ARGV[1] ~= '' then
  local inst = redis.call('HGET', 'itty:node:' .. ARGV[1], 'instance')
  if not inst or inst == ARGV[2] then
    redis.call('HSET', 'itty:node:' .. ARGV[1], 'instance', ARGV[2])
    return tonumber(ARGV[1])
  end
end
if redis.call('EXISTS', 'itty:nodeno') == 0 then redis.call('SET', 'itty:nodeno', ARGV[3]) end
local n = redis.call('INCR', 'itty:nodeno')
redis.call('HSET', 'itty:node:' .. n, 'instance', ARGV[2])
return n
