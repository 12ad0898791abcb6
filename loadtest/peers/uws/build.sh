#!/usr/bin/env bash
# Builds the uWebSockets relays (uws-itty-relay, uws-raw-relay) from
# checkouts of uWebSockets and uSockets, without TLS or zlib, with make and
# g++ only, one job at a time under nice (a shared 2-cpu box).
#
#   loadtest/peers/uws/build.sh UWS_SRC [USOCKETS_SRC]
#   UWS_SRC=... USOCKETS_SRC=... loadtest/peers/uws/build.sh
#
# USOCKETS_SRC defaults to UWS_SRC/uSockets (a `git clone --recursive`).
# The binaries go to target/uws/ (UWS_BIN_DIR overrides), where start.sh
# looks for them. Tested with uWebSockets v20.64.0 and uSockets v0.8.8 (the
# release v20.64.0 pins as its submodule), g++ 12.2 (Debian 12).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
uws=${1:-${UWS_SRC:-}}
usockets=${2:-${USOCKETS_SRC:-${uws:+$uws/uSockets}}}
out=${UWS_BIN_DIR:-$repo/target/uws}
if [[ -z $uws || ! -f $uws/src/App.h ]]; then
  echo "build.sh: no uWebSockets checkout at '${uws}' (want UWS_SRC/src/App.h); see $here/README.md" >&2
  exit 2
fi
if [[ -z $usockets || ! -f $usockets/src/libusockets.h ]]; then
  echo "build.sh: no uSockets checkout at '${usockets}' (want USOCKETS_SRC/src/libusockets.h); see $here/README.md" >&2
  exit 2
fi
mkdir -p "$out"
nice -n 10 make -j1 -s -C "$here" UWS_SRC="$(cd "$uws" && pwd)" USOCKETS_SRC="$(cd "$usockets" && pwd)" OUT="$out" >&2
echo "$out"
