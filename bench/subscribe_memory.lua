-- bench/subscribe_memory.lua - memory over a long SubscribeToShard: a
-- loopback stub (spec/support/stub.js) streams N records as fast as the
-- client reads them, and this reports the Lua heap (collectgarbage counts,
-- after full collections at checkpoints and sampled in between) and the
-- process's resident memory, so "memory stays flat" is a number.
--
--   lua5.4 bench/subscribe_memory.lua [records] [record_bytes] [h2]
--   luajit bench/subscribe_memory.lua 100000             (after make LUA=luajit)
--
-- records defaults to 100000, record_bytes to 200; "h2" streams over HTTP/2
-- on the stub's TLS port. A tool, not a test: spec/subscribe_faults_spec.lua
-- asserts flatness.

local ROOT = (debug.getinfo(1, "S").source:gsub("^@", ""):match("^(.*)/bench/[^/]+$")) or "."
local abi = _VERSION == "Lua 5.4" and "5.4" or "5.1"
package.path = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;" .. ROOT .. "/spec/?.lua;" .. package.path
package.cpath = ROOT .. "/build/" .. abi .. "/?.so;" .. package.cpath

local kinesis = require "kinesis"
local core = require "kinesis.core"
local peers = require "support.peers"

local RECORDS = tonumber(arg[1]) or 100000
local SIZE = tonumber(arg[2]) or 200
local H2 = arg[3] == "h2"
local PER_EVENT = 10

local function status_kb()
  local out = {}
  local f = io.open("/proc/self/status", "r")
  if not f then return out end
  for line in f:lines() do
    local k, v = line:match("^(Vm%a+):%s+(%d+) kB")
    if k then out[k] = tonumber(v) end
  end
  f:close()
  return out
end

local function event_frame(seq)
  local data = core.b64encode(("r"):rep(SIZE))
  local list = {}
  for i = 1, PER_EVENT do
    list[i] = ('{"SequenceNumber":"%d","ApproximateArrivalTimestamp":1700000000.25,"Data":"%s","PartitionKey":"k%d"}')
      :format(seq + i, data, i)
  end
  return core.es_encode({
    { name = ":message-type", type = "string", value = "event" },
    { name = ":event-type", type = "string", value = "SubscribeToShardEvent" },
    { name = ":content-type", type = "string", value = "application/json" },
  }, ('{"Records":[%s],"ContinuationSequenceNumber":"%d","MillisBehindLatest":0}')
    :format(table.concat(list, ","), seq + PER_EVENT))
end

local stub = peers.start("stub", H2 and { tls = true, args = { "--h2", "1" } } or nil)
local ok, err = pcall(function()
  local frames = { peers.b64encode(event_frame(0)), peers.b64encode(event_frame(PER_EVENT)) }
  stub:queue { { frames_b64 = frames, ["repeat"] = math.ceil(RECORDS / PER_EVENT / 2) } }
  local client = assert(kinesis.new {
    endpoint = H2 and stub.tls_endpoint or stub.endpoint, verify = not H2 and nil or false,
    region = "us-east-1", credentials = peers.credentials,
  })
  collectgarbage("collect")
  local base_heap, base = collectgarbage("count"), status_kb()
  local checkpoints, peak, n, events = {}, 0, 0, 0
  local step = math.max(PER_EVENT, math.floor(RECORDS / 10 / PER_EVENT) * PER_EVENT)
  local t0 = core.monotime()
  local sub = client:subscribe_to_shard {
    ConsumerARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1700000000",
    ShardId = "shardId-000000000000", StartingPosition = { Type = "TRIM_HORIZON" },
  }
  for event, e in sub do
    if not event then error(tostring(e)) end
    events = events + 1
    n = n + #event.Records
    local k = collectgarbage("count")
    if k > peak then peak = k end
    if n % step == 0 then
      collectgarbage("collect")
      checkpoints[#checkpoints + 1] = { n, collectgarbage("count"), status_kb().VmRSS }
    end
  end
  local elapsed = core.monotime() - t0
  local fin = status_kb()
  print(("subscribe_memory: %d records of %d bytes in %d events over HTTP/%s, %s"):format(
    n, SIZE, events, sub.response and sub.response.http_version or "?", _VERSION))
  print(("  %.2f s, %.0f records/s"):format(elapsed, n / elapsed))
  print(("  Lua heap before: %.0f KiB"):format(base_heap))
  print("  after a full collection at each checkpoint:")
  for _, cp in ipairs(checkpoints) do
    print(("    %7d records  heap %6.0f KiB  RSS %6s KiB"):format(cp[1], cp[2], tostring(cp[3])))
  end
  print(("  sampled heap peak (between collections): %.0f KiB"):format(peak))
  print(("  process RSS: start %s KiB, end %s KiB, peak (VmHWM) %s KiB"):format(
    tostring(base.VmRSS), tostring(fin.VmRSS), tostring(fin.VmHWM)))
  if #checkpoints >= 2 then
    local first, last = checkpoints[1][2], checkpoints[#checkpoints][2]
    print(("  heap ratio last/first checkpoint: %.2f"):format(last / first))
  end
  client:close()
end)
stub.stop()
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
