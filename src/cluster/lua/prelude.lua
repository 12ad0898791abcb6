-- Shared by every script (prepended by src/cluster/redis_engine.rs).
-- Keys, per channel hash h (hash-tagged, so a sharded engine can keep a
-- channel's keys and its pub/sub channel on one instance):
--   itty:{h}        pub/sub channel: messages and join/leave events
--   itty:{h}:m      HASH uid -> "<node> <announce 0|1> <alias json>"
--   itty:{h}:k      HASH j/s -> join/send key digests (ephemeral keys)
-- and per cluster: itty:seq (event counter), itty:nodes (ZSET node ->
-- deadline ms), itty:node:<n> (HASH instance, digest, shards),
-- itty:node:<n>:ch (SET of h where node n has members), itty:nodeno and
-- itty:uid (counters). Single instance: scripts touch keys they build
-- from their arguments.
local function k_members(h) return 'itty:{' .. h .. '}:m' end
local function k_keys(h) return 'itty:{' .. h .. '}:k' end
local function k_pub(h) return 'itty:{' .. h .. '}' end
local function k_nodech(n) return 'itty:node:' .. n .. ':ch' end

-- One unmasked final text frame (docs/PROTOCOL.md section 5: the same
-- bytes as src/pubsub/envelope.rs builds; tests/cluster checks it).
local function frame(body)
  local n = #body
  if n < 126 then return string.char(129, n) .. body end
  return string.char(129, 126, math.floor(n / 256), n % 256) .. body
end

-- A member record: node, announce flag, alias as a JSON literal ('' none).
local function parse(rec)
  return string.match(rec, '^(%d+) ([01]) (.*)$')
end

local function presence(kind, uid, announce, alias, total, date)
  local body = '{"type":"' .. kind .. '",'
  if announce == '1' then
    body = body .. '"uid":"' .. uid .. '",'
    if alias ~= '' then body = body .. '"alias":' .. alias .. ',' end
  end
  return frame(body .. '"total":' .. total .. ',"date":' .. date .. '}')
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Publishes the join of a member just added; returns its seq.
local function publish_join(h, uid, rec, total, date)
  local node, announce, alias = parse(rec)
  local seq = redis.call('INCR', 'itty:seq')
  redis.call('PUBLISH', k_pub(h), 'J ' .. seq .. ' ' .. total .. ' ' .. node .. ' ' .. uid
    .. ' ' .. announce .. ' ' .. #alias .. '\n' .. alias
    .. presence('join', uid, announce, alias, total, date))
  return seq
end

-- Removes a member and publishes its leave; the last one leaving sends
-- nothing and takes the channel's keys with it. False if it was not there
-- (so two removers never send two leaves).
local function remove_member(h, uid, date)
  local m = k_members(h)
  local rec = redis.call('HGET', m, uid)
  if not rec then return false end
  redis.call('HDEL', m, uid)
  local total = redis.call('HLEN', m)
  if total == 0 then
    redis.call('DEL', k_keys(h))
    return true
  end
  local node, announce, alias = parse(rec)
  local seq = redis.call('INCR', 'itty:seq')
  redis.call('PUBLISH', k_pub(h), 'L ' .. seq .. ' ' .. total .. ' ' .. node .. ' ' .. uid
    .. '\n' .. presence('leave', uid, announce, alias, total, date))
  return true
end

-- Removes every member node d holds, on every channel, and forgets d.
local function reap(d, date)
  redis.call('ZREM', 'itty:nodes', d)
  local reaped = 0
  for _, h in ipairs(redis.call('SMEMBERS', k_nodech(d))) do
    local all = redis.call('HGETALL', k_members(h))
    for i = 1, #all, 2 do
      if parse(all[i + 1]) == d and remove_member(h, all[i], date) then
        reaped = reaped + 1
      end
    end
  end
  redis.call('DEL', k_nodech(d), 'itty:node:' .. d)
  return reaped
end
