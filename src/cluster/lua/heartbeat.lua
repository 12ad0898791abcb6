-- Every node, every heartbeat: says it is alive until now + ARGV[2] ms
-- (the engine's clock), then reaps every node whose deadline passed:
-- each of its members leaves (once: two reapers never double a leave).
-- ARGV: 1 node, 2 deadline offset ms, 3 config digest, 4 instance id,
-- 5 shards. Returns {'lost'} if another process holds the number, else
-- {'ok', members reaped, live nodes, live nodes whose digest differs}.
local node = ARGV[1]
local now = now_ms()
local rec = 'itty:node:' .. node
local inst = redis.call('HGET', rec, 'instance')
if inst and inst ~= ARGV[4] then return {'lost'} end
redis.call('HSET', rec, 'instance', ARGV[4], 'digest', ARGV[3], 'shards', ARGV[5])
redis.call('ZADD', 'itty:nodes', now + tonumber(ARGV[2]), node)
local reaped = 0
for _, d in ipairs(redis.call('ZRANGEBYSCORE', 'itty:nodes', '-inf', now)) do
  reaped = reaped + reap(d, now)
end
local live = redis.call('ZRANGE', 'itty:nodes', 0, -1)
local mismatched = 0
for _, n in ipairs(live) do
  local digest = redis.call('HGET', 'itty:node:' .. n, 'digest')
  if digest and digest ~= ARGV[3] then mismatched = mismatched + 1 end
end
return {'ok', reaped, #live, mismatched}
