-- bench/consumer.lua - consumer throughput through the whole path
-- (GetRecords, decode, deaggregate, handler, checkpoint) against a private
-- nginx stub whose every GetRecords answer holds 10,000 records, as a ratio
-- to GetRecords calls alone on the same stub and connection reuse. Pacing to
-- the shard limits is lifted (read_rate) so the figure is the client's cost.
-- Measurements alternate; medians are reported.
--
--   lua5.4 bench/consumer.lua WORKDIR [SECONDS] [REPS]
--
-- Prints { get_records_rps, consumer_rps (memory store), ratio,
-- consumer_file_rps (file store: fsync per batch), ratio_file, records_per_call,
-- get_records_in_run_rps (GetRecords alone from a kinesis.run task), hwm_kb }.

local common = require "common"
local kinesis = require "kinesis"

local WORK = assert(arg[1], "usage: consumer.lua WORKDIR [SECONDS] [REPS]")
local SECONDS = tonumber(arg[2]) or 2
local REPS = tonumber(arg[3]) or 3
local NGINX = os.getenv("NGINX") or "/usr/sbin/nginx"
local MODULES = os.getenv("NGINX_MODULES") or "/usr/lib/nginx/modules"

local dir = WORK .. "/consumer-nginx"
os.execute("mkdir -p '" .. dir .. "'")

local user = io.popen("id -u"):read("*l") == "0" and "user root;" or ""
local port
local TEMPLATE = [[
worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log warn;
USER
load_module MODULES/ndk_http_module.so;
load_module MODULES/ngx_http_lua_module.so;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path DIR/body;
  keepalive_requests 100000000;
  default_type application/x-amz-json-1.1;
  init_by_lua_block {
    -- 10,000 records of 100 bytes, as the service writes them
    local parts = {}
    for i = 1, 10000 do
      local t = {}
      for j = 1, 100 do t[j] = string.char((i * 31 + j * 7) % 256) end
      parts[i] = string.format('{"SequenceNumber":"4965150811237057323336453918541915328203649300922%07d",'
        .. '"ApproximateArrivalTimestamp":1.%012dE9,"Data":"%s","PartitionKey":"partition-key-%05d"}',
        i, 713354821000 + i * 7, ngx.encode_base64(table.concat(t)), i)
    end
    package.loaded.bench_consumer = {
      GetRecords = '{"Records":[' .. table.concat(parts, ",") .. '],"NextShardIterator":"AAAAAAAAAAGc0FbRMa3yT1p0c2VyAbcdef==","MillisBehindLatest":1000}',
      GetShardIterator = '{"ShardIterator":"AAAAAAAAAAGc0FbRMa3yT1p0c2VyAbcdef=="}',
      ListShards = '{"Shards":[{"ShardId":"shardId-000000000000","HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"340282366920938463463374607431768211455"},"SequenceNumberRange":{"StartingSequenceNumber":"1"}}]}',
    }
  }
  server {
    listen 127.0.0.1:PORT;
    location / {
      content_by_lua_block {
        ngx.req.discard_body()
        local op = (ngx.var.http_x_amz_target or ""):match("%.(%w+)$")
        local body = package.loaded.bench_consumer[op]
        if not body then ngx.status = 400 body = '{"__type":"UnknownOperationException"}' end
        ngx.header["Content-Type"] = "application/x-amz-json-1.1"
        ngx.header["Content-Length"] = #body
        ngx.print(body)
      }
    }
  }
}
]]
-- a random loopback port, another one if it is taken
math.randomseed(os.time() + math.floor(common.now() * 1000))
local started = false
for _ = 1, 8 do
  port = math.random(20000, 60000)
  local conf = TEMPLATE:gsub("DIR", dir):gsub("MODULES", MODULES):gsub("USER", user):gsub("PORT", tostring(port))
  local f = assert(io.open(dir .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  if os.execute(NGINX .. " -p '" .. dir .. "' -c '" .. dir .. "/nginx.conf' -e '" .. dir .. "/error.log' 2>/dev/null") then
    started = true
    break
  end
end
assert(started, "nginx did not start (see " .. dir .. "/error.log)")
local function stop_nginx()
  local p = io.open(dir .. "/nginx.pid")
  if p then
    os.execute("kill " .. p:read("*l") .. " 2>/dev/null")
    p:close()
  end
end

local ok, err = pcall(function()
  local client = assert(kinesis.new { endpoint = "http://127.0.0.1:" .. port, region = "us-east-1",
    credentials = { access_key_id = "AKIDBENCH", secret_access_key = "bench" } })
  for _ = 1, 50 do
    if client:list_shards { StreamName = "bench" } then break end
    kinesis.sleep(0.05)
  end

  local function get_records_alone()
    local it = assert(client:get_shard_iterator { StreamName = "bench", ShardId = "shardId-000000000000",
      ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
    local n, t0 = 0, common.now()
    repeat
      local out = assert(client:get_records { ShardIterator = it, Limit = 10000 })
      n = n + #out.Records
      it = out.NextShardIterator
    until common.now() - t0 >= SECONDS
    return n / (common.now() - t0)
  end

  -- the same calls from a task of kinesis.run (the consumer's transport path)
  local function get_records_in_run()
    return kinesis.run(get_records_alone)
  end

  local function consumer(store)
    local c
    local t0, t_stop, n = nil, nil, 0
    c = client:consumer { stream = "bench", store = store, read_rate = 1000, idle_time_between_reads = 0.2,
      handler = function(records)
        local now = common.now()
        if not t0 then
          t0 = now        -- from the end of the first batch: startup is not the steady state
          return
        end
        if t_stop then return end
        n = n + #records
        if now - t0 >= SECONDS then
          t_stop = now
          c:stop()
        end
      end }
    assert(c:run())
    local s = c:stats()
    assert(s.checkpoints >= 1 and s.errors == 0, "consumer errors")
    return n / (t_stop - t0)
  end

  local base, mem, file, r_mem, r_file, in_run = {}, {}, {}, {}, {}, {}
  local cp_path = dir .. "/bench.checkpoints"
  for rep = 1, REPS do
    local b, m, fl
    if rep % 2 == 1 then
      b = get_records_alone()
      m = consumer(kinesis.checkpoints.memory())
      os.remove(cp_path)
      fl = consumer(kinesis.checkpoints.file { path = cp_path })
    else
      os.remove(cp_path)
      fl = consumer(kinesis.checkpoints.file { path = cp_path })
      m = consumer(kinesis.checkpoints.memory())
      b = get_records_alone()
    end
    in_run[rep] = get_records_in_run()
    base[rep], mem[rep], file[rep] = b, m, fl
    r_mem[rep], r_file[rep] = m / b, fl / b
  end
  local med = common.median
  common.emit { get_records_rps = med(base), consumer_rps = med(mem), ratio = med(r_mem),
    consumer_file_rps = med(file), ratio_file = med(r_file), records_per_call = 10000,
    get_records_in_run_rps = med(in_run) }
end)
stop_nginx()
if not ok then error(err, 0) end
