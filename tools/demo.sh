#!/bin/sh
# make demo: runs examples/quickstart.lua against KINESIS_ENDPOINT when it is
# set, otherwise against a kinesis-local started here on free loopback ports,
# and ends by consuming what it produced (examples/consumer.lua; DEMO_STREAM
# names a stream an earlier step wrote to).
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/spec/?.lua;;"
export LUA_CPATH="$ROOT/build/5.4/?.so;;"
if [ -n "$KINESIS_ENDPOINT" ]; then
  exec lua5.4 examples/quickstart.lua
fi
mkdir -p spec/.tmp
info=$(node spec/support/launch.js kinesis-local '{"env":{"CREATE_STREAM_DURATION":"500ms","DELETE_STREAM_DURATION":"500ms"}}') || { echo "$info"; exit 1; }
pid=$(echo "$info" | sed -E 's/.*"pid":([0-9]+).*/\1/')
port=$(echo "$info" | sed -E 's/.*"port":([0-9]+).*/\1/')
trap 'kill -TERM -"$pid" 2>/dev/null' EXIT INT TERM
echo "kinesis-local is listening on 127.0.0.1:$port (pid $pid)"
KINESIS_ENDPOINT="http://127.0.0.1:$port" lua5.4 examples/quickstart.lua || exit 1
echo "--- consuming (examples/consumer.lua)"
KINESIS_ENDPOINT="http://127.0.0.1:$port" STREAM_NAME="$DEMO_STREAM" lua5.4 examples/consumer.lua
