-- A node stops: its remaining members leave now (SIGTERM), and it is
-- forgotten. ARGV: 1 node. Returns the members removed.
return reap(ARGV[1], now_ms())
