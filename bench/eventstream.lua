-- bench/eventstream.lua - event-stream decode throughput on a
-- SubscribeToShard-like stream: events of 100 records (100-byte blobs,
-- base64 in JSON), fed to core.es_decoder in 64 KiB chunks.
--   framing: feed + next (prelude/message CRC-32, headers, payload slice)
--   full:    framing + cjson + codec.convert of SubscribeToShardEvent
--            (Data to raw bytes), what a consumer pays per event
--
--   lua5.4 bench/eventstream.lua [REPS]
--
-- Prints { framing_mb_s, full_mb_s, stream_bytes, events, hwm_kb } (MB = 10^6 bytes).

local common = require "common"
local core = require "kinesis.core"
local cjson = require "cjson"
local codec = require "kinesis.codec"
local model = require "kinesis.model"

local reps = tonumber(arg[1]) or 5
local EVENTS, PER_EVENT, CHUNK = 200, 100, 65536

local blob = core.b64encode(common.bytes(100, 3))
local frames = {}
for e = 1, EVENTS do
  local recs = {}
  for r = 1, PER_EVENT do
    recs[r] = string.format(
      '{"SequenceNumber":"4965150811237057323336453918541915328203649300922%07d",' ..
      '"ApproximateArrivalTimestamp":1.%012dE9,"Data":"%s","PartitionKey":"partition-key-%05d"}',
      e * PER_EVENT + r, 713354821000 + r, blob, r)
  end
  local payload = '{"Records":[' .. table.concat(recs, ",") ..
    '],"ContinuationSequenceNumber":"49651508112370573233364539185419153282036493009227382786",' ..
    '"MillisBehindLatest":0,"ChildShards":[]}'
  frames[e] = core.es_encode({
    { name = ":event-type", type = "string", value = "SubscribeToShardEvent" },
    { name = ":content-type", type = "string", value = "application/json" },
    { name = ":message-type", type = "string", value = "event" },
  }, payload)
end
local stream = table.concat(frames)
frames = nil
local chunks = {}
for pos = 1, #stream, CHUNK do chunks[#chunks + 1] = stream:sub(pos, pos + CHUNK - 1) end

local shapes = model.shapes
local function decode_all(full)
  local dec = core.es_decoder()
  local n = 0
  for i = 1, #chunks do
    assert(dec:feed(chunks[i]))
    while true do
      local m, err = dec:next()
      if not m then
        if err then error(err.code .. ": " .. err.message) end
        break
      end
      n = n + 1
      if full then
        local ev = assert(codec.convert(shapes, "SubscribeToShardEvent", cjson.decode(m.payload)))
        assert(#ev.Records[1].Data == 100)
      end
    end
  end
  assert(dec:finish())
  dec:close()
  assert(n == EVENTS)
end

local now = common.now
local function mb_s(full)
  collectgarbage("collect")
  local t0 = now()
  decode_all(full)
  return #stream / (now() - t0) / 1e6
end

local framing, full = {}, {}
mb_s(false)
for _ = 1, reps do
  framing[#framing + 1] = mb_s(false)
  full[#full + 1] = mb_s(true)
end
common.emit {
  framing_mb_s = common.median(framing), full_mb_s = common.median(full),
  stream_bytes = #stream, events = EVENTS,
}
