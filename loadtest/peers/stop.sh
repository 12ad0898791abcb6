#!/usr/bin/env bash
# Stop a peer started by start.sh: SIGTERM to the pid start.sh recorded,
# SIGKILL after 5 s. Only that pid is signalled (nginx's master takes its
# worker down with it).
#
#   loadtest/peers/stop.sh PEER PORT
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 PEER PORT" >&2; exit 2; }
state=${PEERS_STATE:-/tmp/itty-peers}/$1-$2
[[ -f $state/pid ]] || { echo "stop.sh: nothing recorded in $state" >&2; exit 0; }
pid=$(cat "$state/pid")
measure=$(cat "$state/measure_pid" 2>/dev/null || echo "$pid")
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "stop.sh: $1 (pid $pid) ignored SIGTERM for 5 s; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
# An nginx worker outlives a SIGKILLed master: end it too.
if [[ $measure != "$pid" ]] && kill -0 "$measure" 2>/dev/null; then
  sleep 0.5
  kill -KILL "$measure" 2>/dev/null || true
fi
rm -f "$state/pid" "$state/measure_pid"
