-- A block of uid numbers: returns the end of a block of ARGV[2] numbers.
-- When the engine lost the counter it restarts from the random base
-- ARGV[1] (uids are unique while the engine keeps its data).
if redis.call('EXISTS', 'itty:uid') == 0 then redis.call('SET', 'itty:uid', ARGV[1]) end
return redis.call('INCRBY', 'itty:uid', ARGV[2])
