-- A member leaves channel h; its leave goes out unless it was the last.
-- ARGV: 1 h, 2 uid, 3 node, 4 date ms, 5 '1' if the node has no member
-- left on h. Returns 1 if it was a member, else 0.
if ARGV[5] == '1' then redis.call('SREM', k_nodech(ARGV[3]), ARGV[1]) end
if remove_member(ARGV[1], ARGV[2], ARGV[4]) then return 1 end
return 0
