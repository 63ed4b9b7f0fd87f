-- bench/decode.lua - decoding a 10,000-record GetRecords response the way
-- the client does (kinesis.codec.decode: cjson, then the shape walk that
-- turns Data base64 into raw bytes, keeps timestamps as numbers and makes
-- integer members Lua integers), against cjson.decode of the same body
-- alone. Repetitions alternate the two; each is preceded by a full GC.
--
--   lua5.4 bench/decode.lua [REPS]
--
-- Prints { cjson_ms, codec_ms, ratio (median of per-repetition ratios),
-- walk_ms (the shape walk on an already parsed body), b64_ms (the 10,000
-- base64 decodes alone), body_bytes, records, hwm_kb }.

local common = require "common"
local cjson = require "cjson"
local codec = require "kinesis.codec"
local model = require "kinesis.model"
local core = require "kinesis.core"

local reps = tonumber(arg[1]) or 7
local N = 10000
-- CPU time (os.clock): a compute-bound figure, less disturbed than wall time
-- when other processes share the CPUs
local clock = os.clock

-- The body as the service writes it: timestamps in Java's double notation.
local blobs = {}
for i = 1, 256 do blobs[i] = core.b64encode(common.bytes(100, i)) end
local parts = {}
for i = 1, N do
  parts[i] = string.format(
    '{"SequenceNumber":"4965150811237057323336453918541915328203649300922%07d",' ..
    '"ApproximateArrivalTimestamp":1.%012dE9,"Data":"%s","PartitionKey":"partition-key-%05d"}',
    i, 713354821000 + i * 7, blobs[(i - 1) % 256 + 1], i)
end
local body = '{"Records":[' .. table.concat(parts, ",") ..
  '],"NextShardIterator":"AAAAAAAAAAGc0FbRMa3yT1p0c2VyAbcdefghijklmnopqrstuvwxyz0123456789==",' ..
  '"MillisBehindLatest":0}'
parts, blobs = nil, nil

-- the result must be right before its speed matters
local out = assert(codec.decode(model.shapes, "GetRecordsOutput", body))
assert(#out.Records == N and #out.Records[1].Data == 100)
assert(math.type == nil or math.type(out.MillisBehindLatest) == "integer")
assert(type(out.Records[N].ApproximateArrivalTimestamp) == "number")
out = nil

local function timed(f)
  collectgarbage("collect")
  local t0 = clock()
  f()
  return (clock() - t0) * 1e3
end

local shapes = model.shapes
local t_cjson, t_codec, ratios, t_walk, t_b64 = {}, {}, {}, {}, {}
for r = 1, reps + 1 do
  local a = timed(function() cjson.decode(body) end)
  local b = timed(function() codec.decode(shapes, "GetRecordsOutput", body) end)
  local parsed = cjson.decode(body)
  local w = timed(function() codec.convert(shapes, "GetRecordsOutput", parsed) end)
  parsed = cjson.decode(body)
  local recs = parsed.Records
  local b64decode = core.b64decode
  local x = timed(function()
    for i = 1, #recs do b64decode(recs[i].Data) end
  end)
  parsed, recs = nil, nil
  if r > 1 then -- the first round warms caches and the allocator
    t_cjson[#t_cjson + 1], t_codec[#t_codec + 1] = a, b
    ratios[#ratios + 1] = b / a
    t_walk[#t_walk + 1], t_b64[#t_b64 + 1] = w, x
  end
end

local med = common.median
common.emit {
  cjson_ms = med(t_cjson), codec_ms = med(t_codec), ratio = med(ratios),
  walk_ms = med(t_walk), b64_ms = med(t_b64), body_bytes = #body, records = N,
}
