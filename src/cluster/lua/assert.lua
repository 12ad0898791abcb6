-- After a reconnect: node's members on h are exactly the ones listed.
-- Members of the node that are not listed leave, listed ones that are
-- missing join (events published as usual), the channel's ephemeral keys
-- are set again if the channel was gone. Returns the member table and
-- the event counter, atomically: the node's new starting point.
-- ARGV: 1 h, 2 node, 3 date ms, 4 join digest, 5 send digest, 6 count,
--       then count triples: uid, announce, alias json. A count of -1
--       changes nothing: only the table and the counter are returned.
local h, node, date = ARGV[1], ARGV[2], ARGV[3]
local m, k = k_members(h), k_keys(h)
local n = tonumber(ARGV[6])
if n < 0 then
  local held = redis.call('HMGET', k, 'j', 's')
  return {tonumber(redis.call('GET', 'itty:seq') or '0'), redis.call('HGETALL', m),
    held[1] or '', held[2] or ''}
end
local wanted = {}
for i = 0, n - 1 do
  wanted[ARGV[7 + 3 * i]] = node .. ' ' .. ARGV[8 + 3 * i] .. ' ' .. ARGV[9 + 3 * i]
end
local all = redis.call('HGETALL', m)
for i = 1, #all, 2 do
  if parse(all[i + 1]) == node and not wanted[all[i]] then
    remove_member(h, all[i], date)
  end
end
if n > 0 and redis.call('EXISTS', m) == 0 and redis.call('EXISTS', k) == 0 then
  if ARGV[4] ~= '' then redis.call('HSET', k, 'j', ARGV[4]) end
  if ARGV[5] ~= '' then redis.call('HSET', k, 's', ARGV[5]) end
end
for i = 0, n - 1 do
  local uid = ARGV[7 + 3 * i]
  if redis.call('HSETNX', m, uid, wanted[uid]) == 1 then
    publish_join(h, uid, wanted[uid], redis.call('HLEN', m), date)
  end
end
if n > 0 then redis.call('SADD', k_nodech(node), h) else redis.call('SREM', k_nodech(node), h) end
local held = redis.call('HMGET', k, 'j', 's')
return {tonumber(redis.call('GET', 'itty:seq') or '0'), redis.call('HGETALL', m),
  held[1] or '', held[2] or ''}
