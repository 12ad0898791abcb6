-- An HTTP push to channel h from a node with no member on it: published
-- only if someone is there. ARGV: 1 h, 2 payload. Returns the member count.
local n = redis.call('HLEN', k_members(ARGV[1]))
if n > 0 then redis.call('PUBLISH', k_pub(ARGV[1]), ARGV[2]) end
return n
