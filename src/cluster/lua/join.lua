-- A member joins channel h: checks or sets the ephemeral keys, adds the
-- member, publishes its join with the new total.
-- ARGV: 1 h, 2 uid, 3 node, 4 announce, 5 alias json, 6 date ms,
--       7 'n' (a namespace decided at home) or 'e' (ephemeral keys),
--       8 may send (namespace), 9 join key digest, 10 send key digest,
--       11 '1' to return the member table (the node's first member).
-- Returns {'refused'}, {'duplicate'}, or {'ok', seq, total, may_send,
-- held join digest, held send digest[, members]}.
local h, uid, node = ARGV[1], ARGV[2], ARGV[3]
local m, k = k_members(h), k_keys(h)
local before = redis.call('HLEN', m)
local may_send = '1'
if ARGV[7] == 'n' then
  may_send = ARGV[8]
elseif before == 0 then
  redis.call('DEL', k)
  if ARGV[9] ~= '' then redis.call('HSET', k, 'j', ARGV[9]) end
  if ARGV[10] ~= '' then redis.call('HSET', k, 's', ARGV[10]) end
else
  local held = redis.call('HMGET', k, 'j', 's')
  if held[1] and held[1] ~= ARGV[9] then return {'refused'} end
  if held[2] and held[2] ~= ARGV[10] then may_send = '0' end
end
local rec = node .. ' ' .. ARGV[4] .. ' ' .. ARGV[5]
if redis.call('HSETNX', m, uid, rec) == 0 then return {'duplicate'} end
redis.call('SADD', k_nodech(node), h)
local total = before + 1
local seq = publish_join(h, uid, rec, total, ARGV[6])
local held = redis.call('HMGET', k, 'j', 's')
local reply = {'ok', seq, total, may_send, held[1] or '', held[2] or ''}
if ARGV[11] == '1' then reply[7] = redis.call('HGETALL', m) end
return reply
