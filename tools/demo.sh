#!/bin/sh
# make demo: runs examples/quickstart.lua against KINESIS_ENDPOINT when it is
# set, otherwise against a kinesis-local started here on free loopback ports,
# then puts 5,000 records through the producer (examples/producer.lua, with
# its progress line), and ends by consuming what it produced (examples/consumer.lua; DEMO_STREAM
# names a stream an earlier step wrote to).
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/spec/?.lua;;"
export LUA_CPATH="$ROOT/build/5.4/?.so;;"
if [ -n "$KINESIS_ENDPOINT" ]; then
  exec lua5.4 examples/quickstart.lua
fi
mkdir -p spec/.tmp
# the same local Kinesis as `make local-kinesis`, on free ports, stopped on exit
export KINESIS_LOCAL_PID_FILE="$ROOT/spec/.tmp/demo-kinesis-local.pid"
lines=$(sh tools/local-kinesis.sh --background --free-ports 2>spec/.tmp/demo-kinesis-local.err) ||
  { cat spec/.tmp/demo-kinesis-local.err; exit 1; }
trap 'sh tools/local-kinesis.sh --stop 2>/dev/null' EXIT INT TERM
port=$(echo "$lines" | sed -n -E 's/^export AWS_ENDPOINT_URL_KINESIS=http:\/\/127\.0\.0\.1:([0-9]+)$/\1/p')
echo "kinesis-local is listening on 127.0.0.1:$port (tools/local-kinesis.sh)"
KINESIS_ENDPOINT="http://127.0.0.1:$port" lua5.4 examples/quickstart.lua || exit 1
echo "--- producing (examples/producer.lua)"
KINESIS_ENDPOINT="http://127.0.0.1:$port" RECORDS=5000 lua5.4 examples/producer.lua || exit 1
echo "--- consuming (examples/consumer.lua)"
KINESIS_ENDPOINT="http://127.0.0.1:$port" STREAM_NAME="$DEMO_STREAM" lua5.4 examples/consumer.lua
