-- bench/codec.lua - the C codec's own figures: the 10,000-record GetRecords
-- answer (written once, served by the nginx stub), GetRecords end to end,
-- and the peak memory of decoding that answer.
--
--   lua5.4 bench/codec.lua body FILE                -- writes the answer
--   lua5.4 bench/codec.lua get_records PORT SECONDS -- client:get_records end to end
--   lua5.4 bench/codec.lua memory FILE              -- peak RSS of one decode
--   lua5.4 bench/codec.lua profile                  -- the pieces of a call, in process
--
-- get_records prints { rate, calls, seconds, connects, cpu_us, hwm_kb };
-- memory prints { body_bytes, base_kb, peak_kb, above_kb, ratio } where
-- ratio = (peak RSS while decoding - RSS before) / body size. The peak is
-- VmHWM after resetting it (writing 5 to /proc/self/clear_refs) once the
-- body is loaded and the collector has run, so reading the file does not
-- count.

local common = require "common"
local core = require "kinesis.core"

local mode = arg[1]
local N = 10000

local function body()
  -- the body as the service writes it: timestamps in Java's double notation
  local blobs = {}
  for i = 1, 256 do blobs[i] = core.b64encode(common.bytes(100, i)) end
  local parts = {}
  for i = 1, N do
    parts[i] = string.format(
      '{"SequenceNumber":"4965150811237057323336453918541915328203649300922%07d",' ..
      '"ApproximateArrivalTimestamp":1.%012dE9,"Data":"%s","PartitionKey":"partition-key-%05d"}',
      i, 713354821000 + i * 7, blobs[(i - 1) % 256 + 1], i)
  end
  return '{"Records":[' .. table.concat(parts, ",") ..
    '],"NextShardIterator":"AAAAAAAAAAGc0FbRMa3yT1p0c2VyAbcdefghijklmnopqrstuvwxyz0123456789==",' ..
    '"MillisBehindLatest":0}'
end

local function status_kb(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)"))
end

if mode == "body" then
  local f = assert(io.open(arg[2], "wb"))
  f:write(body())
  f:close()
  common.emit { body_bytes = #body() }

elseif mode == "get_records" then
  local port, seconds = arg[2], tonumber(arg[3]) or 1
  local client = common.client(port)
  local params = { ShardIterator = "AAAAAAAAAAGc0FbRMa3yT1p0c2Vy" }
  local function call()
    local out, err = client:get_records(params)
    if not out then error("bench call failed: " .. tostring(err)) end
    if #out.Records ~= N then error("short answer") end
  end
  local rate, calls, elapsed, cpu_us = common.rate(call, seconds, 1, 3)
  common.emit { rate = rate, calls = calls, seconds = elapsed,
                connects = client:transport():stats().connects, cpu_us = cpu_us }

elseif mode == "memory" then
  local codec = require "kinesis.codec"
  local model = require "kinesis.model"
  local f = assert(io.open(arg[2], "rb"))
  local text = f:read("a")
  f:close()
  codec.decode(model.shapes, "GetRecordsOutput", "{}") -- the model compiled
  collectgarbage("collect")
  collectgarbage("collect")
  local reset = io.open("/proc/self/clear_refs", "w")
  assert(reset, "cannot reset VmHWM (/proc/self/clear_refs)")
  reset:write("5")
  reset:close()
  local base = status_kb("VmRSS")
  local out = assert(codec.decode(model.shapes, "GetRecordsOutput", text))
  assert(#out.Records == N)
  local peak = status_kb("VmHWM")
  common.emit { body_bytes = #text, base_kb = base, peak_kb = peak, above_kb = peak - base,
                ratio = (peak - base) * 1024 / #text }
elseif mode == "profile" then
  -- CPU µs per call of each piece the client adds to the transport, for
  -- PutRecord and PutRecords: validation + JSON + base64 (encode_input),
  -- signing (of which SHA-256 of the body), decoding the answer, and the
  -- whole pipeline with an in-memory transport
  local codec = require "kinesis.codec"
  local model = require "kinesis.model"
  local client_mod = require "kinesis.client"
  local shapes = model.shapes
  local function us(f)
    local _, _, _, cpu = common.rate(f, 0.3, 4, 8)
    return cpu
  end
  local answers = {
    put_record = '{"SequenceNumber":"49651508112370573233364539185419153282036493009227382786","ShardId":"shardId-000000000000"}',
  }
  local parts = {}
  for i = 1, 500 do
    parts[i] = string.format('{"SequenceNumber":"49651508112370573233364539185419153282036493%013d","ShardId":"shardId-%012d"}', i, i % 4)
  end
  answers.put_records = '{"FailedRecordCount":0,"Records":[' .. table.concat(parts, ",") .. "]}"
  local out = {}
  for _, kind in ipairs { "put_record", "put_records" } do
    local op = client_mod.operations[kind]
    local params = kind == "put_record" and common.put_record_params() or common.put_records_params()
    local body = assert(codec.encode_input(shapes, op, params))
    local signer = core.signer()
    local sreq = { method = "POST", path = "/", body = body, region = "us-east-1", service = "kinesis",
                   access_key = "AKID", secret_key = "SECRET", time = 1700000000,
                   headers = { { "Content-Type", "application/x-amz-json-1.1" }, { "Host", "127.0.0.1" },
                               { "X-Amz-Target", "Kinesis_20131202." .. op.name } } }
    local canned = { status = 200, headers = {}, body = answers[kind] }
    local mem = common.client(1, { transport = { send = function() return canned end } })
    local call = mem[kind]
    out[kind] = {
      body_bytes = #body, answer_bytes = #answers[kind],
      encode_us = us(function() codec.encode_input(shapes, op, params) end),
      sign_us = us(function() assert(signer:sign(sreq)) end),
      sha256_us = us(function() core.sha256_hex(body) end),
      decode_us = us(function() assert(codec.decode(shapes, op.output, answers[kind])) end),
      in_memory_us = us(function() assert(call(mem, params)) end),
    }
  end
  common.emit(out)
else
  error("usage: codec.lua body FILE | get_records PORT SECONDS | memory FILE | profile")
end
