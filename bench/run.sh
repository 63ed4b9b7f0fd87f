#!/bin/sh
# bench/run.sh - `make bench`: builds the C baselines (bench/floor.c,
# bench/sha_floor.c), starts a private nginx on free loopback ports (fixed
# responses, plus Lua handlers for the 500-entry PutRecords answer and the
# 20 ms latency stub), runs bench/driver.lua and stops nginx on any exit.
# Results: the printed table, bench/results.json and bench/RESULTS.md.
# A tool, not a test: the exit status reflects only whether it could run.
#   BENCH_ROUNDS=n   rounds per measurement (default 5; medians are taken)
#   BENCH_ONLY=a,b   only these groups (put, put_records, codec, decode, sign,
#                    concurrency, hashing, eventstream, consumer, producer, profile, extra)
#   BENCH_NO_WRITE=1 print the table only, leave results.json/RESULTS.md alone
#   BENCH_LUA=luajit run the benchmark scripts on LuaJIT (after `make luajit`);
#                    results then go to results-luajit.json/RESULTS-luajit.md
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
# the driver and helpers always run on Lua 5.4; the benchmark scripts on
# BENCH_LUA (lua5.4, or luajit after `make luajit`)
LUA=lua5.4
export BENCH_LUA="${BENCH_LUA:-lua5.4}"
case "$BENCH_LUA" in
  luajit*) ABI=5.1 ;;
  *) ABI=$(echo "$BENCH_LUA" | sed -n 's/^lua\([0-9.]*\)$/\1/p') ;;
esac
[ -n "$ABI" ] || ABI=5.4
export SHARED="${SHARED:-$ROOT/../shared}"   # for bench/subscribe_memory.lua
NGINX=${NGINX:-/usr/sbin/nginx}
NGINX_MODULES=${NGINX_MODULES:-/usr/lib/nginx/modules}
export LUA_PATH="$ROOT/bench/?.lua;$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/$ABI/?.so;;"
[ -f "$ROOT/build/$ABI/kinesis/core.so" ] || { echo "bench: build/$ABI is not built (make LUA=$BENCH_LUA build)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kinesis-bench.XXXXXX") || exit 1
NG="$WORK/nginx"

stop_nginx() {
  if [ -s "$NG/nginx.pid" ]; then
    pid=$(cat "$NG/nginx.pid")
    kill "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  fi
}
cleanup() {
  stop_nginx
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench: $*" >&2; exit 1; }

# --- C baselines -----------------------------------------------------------
CURL_FLAGS=$(pkg-config --cflags --libs libcurl 2>/dev/null || echo -lcurl)
SSL_FLAGS=$(pkg-config --cflags --libs libcrypto 2>/dev/null || echo -lcrypto)
${CC:-cc} -O2 -Wall -o "$WORK/floor" bench/floor.c $CURL_FLAGS $SSL_FLAGS || die "cannot build bench/floor.c"
${CC:-cc} -O2 -Wall -o "$WORK/sha_floor" bench/sha_floor.c $SSL_FLAGS || die "cannot build bench/sha_floor.c"

# --- fixed response bodies -------------------------------------------------
mkdir -p "$NG" || exit 1
$LUA -e '
  local t = {}
  for i = 1, 500 do
    t[i] = string.format("{\"SequenceNumber\":\"49651508112370573233364539185419153282036493%013d\",\"ShardId\":\"shardId-%012d\"}", i, i % 4)
  end
  io.write("{\"FailedRecordCount\":0,\"Records\":[", table.concat(t, ","), "]}")
' > "$NG/put_records_response.json" || die "cannot write the PutRecords response"
# the 10,000-record GetRecords answer (bench/codec.lua writes it; the codec
# figures read it too)
LUA_CPATH_5_4="$ROOT/build/5.4/?.so;;" $LUA bench/codec.lua body "$NG/get_records_response.json" >/dev/null || die "cannot write the GetRecords response"

# --- nginx on free loopback ports ------------------------------------------
free_ports() {
  $LUA -e '
    local socket = require "socket"
    local socks, ports = {}, {}
    for i = 1, 4 do
      local s = assert(socket.bind("127.0.0.1", 0))
      local _, port = s:getsockname()
      socks[i], ports[i] = s, port
    end
    for _, s in ipairs(socks) do s:close() end
    print(table.concat(ports, " "))'
}

USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root;"   # workers must read $WORK

start_nginx() {
  set -- $(free_ports)
  [ $# -eq 4 ] || return 1
  PORT_FIXED=$1 PORT_LARGE=$2 PORT_SLOW=$3 PORT_GET=$4
  cat > "$NG/nginx.conf" <<EOF
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
$USER_LINE
load_module $NGINX_MODULES/ndk_http_module.so;
load_module $NGINX_MODULES/ngx_http_lua_module.so;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $NG/body;
  proxy_temp_path $NG/proxy;
  fastcgi_temp_path $NG/fastcgi;
  uwsgi_temp_path $NG/uwsgi;
  scgi_temp_path $NG/scgi;
  client_max_body_size 16m;
  client_body_buffer_size 1m;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  default_type application/x-amz-json-1.1;
  init_by_lua_block {
    local f = assert(io.open("$NG/put_records_response.json", "rb"))
    local g = assert(io.open("$NG/get_records_response.json", "rb"))
    package.loaded.bench_bodies = {
      get_records = g:read("*a"),
      put_records = f:read("*a"),
      put_record = '{"SequenceNumber":"49651508112370573233364539185419153282036493009227382786","ShardId":"shardId-000000000000"}',
    }
    f:close()
    g:close()
  }
  # PutRecord: a fixed answer, no Lua
  server {
    listen 127.0.0.1:$PORT_FIXED;
    location / {
      add_header x-amzn-RequestId 3d8e2f6a-0c4b-4f1e-9a57-bench00000001;
      return 200 '{"SequenceNumber":"49651508112370573233364539185419153282036493009227382786","ShardId":"shardId-000000000000"}';
    }
  }
  # PutRecords: the 500-entry answer (too long for a config string)
  server {
    listen 127.0.0.1:$PORT_LARGE;
    # bench/producer.lua: a one-shard stream; PutRecords gets one entry per record sent
    location /producer {
      client_body_buffer_size 16m;
      content_by_lua_block {
        ngx.req.read_body()
        local body = ngx.req.get_body_data() or ""
        local out
        if (ngx.var.http_x_amz_target or ""):find("ListShards", 1, true) then
          out = '{"Shards":[{"ShardId":"shardId-000000000000","HashKeyRange":{"StartingHashKey":"0",'
            .. '"EndingHashKey":"340282366920938463463374607431768211455"},'
            .. '"SequenceNumberRange":{"StartingSequenceNumber":"1"}}]}'
        else
          local n, pos = 0, 1
          while true do
            local s = body:find('"PartitionKey":', pos, true)
            if not s then break end
            n, pos = n + 1, s + 15
          end
          out = '{"FailedRecordCount":0,"Records":[' .. string.rep('{"SequenceNumber":'
            .. '"49651508112370573233364539185419153282036493009227382786","ShardId":"shardId-000000000000"}', n, ",") .. "]}"
        end
        ngx.header["Content-Type"] = "application/x-amz-json-1.1"
        ngx.header["Content-Length"] = #out
        ngx.print(out)
      }
    }
    location / {
      content_by_lua_block {
        ngx.req.discard_body()
        local body = package.loaded.bench_bodies.put_records
        ngx.header["Content-Type"] = "application/x-amz-json-1.1"
        ngx.header["Content-Length"] = #body
        ngx.header["x-amzn-RequestId"] = "3d8e2f6a-0c4b-4f1e-9a57-bench00000002"
        ngx.print(body)
      }
    }
  }
  # GetRecords: the 10,000-record answer of bench/codec.lua
  server {
    listen 127.0.0.1:$PORT_GET;
    location / {
      content_by_lua_block {
        ngx.req.discard_body()
        local body = package.loaded.bench_bodies.get_records
        ngx.header["Content-Type"] = "application/x-amz-json-1.1"
        ngx.header["Content-Length"] = #body
        ngx.header["x-amzn-RequestId"] = "3d8e2f6a-0c4b-4f1e-9a57-bench00000004"
        ngx.print(body)
      }
    }
  }
  # the latency stub: every answer 20 ms late
  server {
    listen 127.0.0.1:$PORT_SLOW;
    location / {
      content_by_lua_block {
        ngx.req.discard_body()
        ngx.sleep(0.02)
        local body = package.loaded.bench_bodies.put_record
        ngx.header["Content-Type"] = "application/x-amz-json-1.1"
        ngx.header["Content-Length"] = #body
        ngx.header["x-amzn-RequestId"] = "3d8e2f6a-0c4b-4f1e-9a57-bench00000003"
        ngx.print(body)
      }
    }
  }
}
EOF
  "$NGINX" -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log" 2>>"$NG/start.log"
}

[ -x "$NGINX" ] || die "nginx not found at $NGINX (Debian: apt-get install nginx libnginx-mod-http-lua)"
tries=0
until start_nginx; do
  tries=$((tries + 1))
  [ $tries -ge 5 ] && { cat "$NG/start.log" "$NG/error.log" >&2 2>/dev/null; die "nginx did not start"; }
  stop_nginx
done

# LUA_CPATH_5_4 is read by Lua 5.4 only: the driver gets its modules, LuaJIT keeps LUA_CPATH
LUA_CPATH_5_4="$ROOT/build/5.4/?.so;;" $LUA bench/driver.lua "$WORK" "$PORT_FIXED" "$PORT_LARGE" "$PORT_SLOW" "$PORT_GET" "$NG/get_records_response.json"
status=$?
if [ $status -ne 0 ]; then
  echo "bench: the driver failed (status $status); nginx log:" >&2
  tail -n 20 "$NG/error.log" >&2
fi
exit $status
