#!/bin/sh
# Runs the busted suite under Lua 5.4 against the freshly built modules and
# ends with one line "N passed, N failed". Extra arguments go to busted
# (e.g. a spec file). Servers are started and stopped by the specs.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
export SHARED="${SHARED:-$ROOT/../shared}"
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/spec/?.lua;;"
export LUA_CPATH="$ROOT/build/5.4/?.so;;"
mkdir -p spec/.tmp
log=$(mktemp "${TMPDIR:-/tmp}/kinesis-busted.XXXXXX")
trap 'rm -f "$log"' EXIT
if [ $# -eq 0 ]; then set -- spec; fi
lua5.4 /usr/bin/busted --lua=lua5.4 -p '_spec' -o utfTerminal "$@" 2>&1 | tee "$log"
line=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -a -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' | tail -1)
ok=$(echo "$line" | sed -E 's/^([0-9]+) success.*/\1/')
fail=$(echo "$line" | sed -E 's/.* ([0-9]+) failures? .*/\1/')
err=$(echo "$line" | sed -E 's/.* ([0-9]+) errors?.*/\1/')
if [ -z "$line" ]; then
  echo "0 passed, 1 failed"
  exit 1
fi
echo "$ok passed, $((fail + err)) failed"
[ $((fail + err)) -eq 0 ] && [ "$ok" -gt 0 ]
