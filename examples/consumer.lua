-- consumer.lua - the KCL-class consumer: every shard of a stream read by
-- its own task, records deaggregated and handed to one handler, progress in
-- a checkpoint file, a progress line every second, and a clean stop once
-- the stream is read to its end (stop_after_idle). With STREAM_NAME it reads
-- that stream; otherwise it creates one, writes records to it (some as KPL
-- aggregates), reads them back, checks none is missing and deletes it.
--
--   KINESIS_ENDPOINT=http://127.0.0.1:4568 lua5.4 examples/consumer.lua
--   KINESIS_ENDPOINT=... STREAM_NAME=events lua5.4 examples/consumer.lua

local kinesis = require "kinesis"

local endpoint = os.getenv("KINESIS_ENDPOINT")
local credentials
if endpoint and not os.getenv("AWS_ACCESS_KEY_ID") then
  credentials = { access_key_id = "AKIDLOCAL", secret_access_key = "local-secret" }
end
local client = assert(kinesis.new {
  endpoint = endpoint, region = os.getenv("AWS_REGION") or "us-east-1", credentials = credentials,
})

local given = os.getenv("STREAM_NAME")
if given == "" then given = nil end
local stream = given or ("consumer-example-" .. os.time())
local expected = 0

if not given then
  assert(client:create_stream { StreamName = stream, ShardCount = 2 })
  assert(client:wait("stream_exists", { StreamName = stream }, { delay = 0.5, max_attempts = 60 }))
  -- 200 plain records and 20 aggregates of 5 user records each
  for batch = 1, 4 do
    local entries = {}
    for i = 1, 50 do
      entries[i] = { PartitionKey = "user-" .. (i % 7), Data = ("plain %d/%d"):format(batch, i) }
    end
    for i = 1, 5 do
      local users = {}
      for j = 1, 5 do users[j] = { PartitionKey = "agg-" .. i, Data = ("aggregated %d/%d/%d"):format(batch, i, j) } end
      local agg = kinesis.aggregate(users)
      entries[#entries + 1] = { PartitionKey = agg.PartitionKey, Data = agg.Data, ExplicitHashKey = agg.ExplicitHashKey }
    end
    local out = assert(client:put_records { StreamName = stream, Records = entries })
    assert(out.FailedRecordCount == 0, "some records were refused; run again")
  end
  expected = 4 * (50 + 25)
end

local checkpoint_file = os.tmpname()
os.remove(checkpoint_file)

local seen = 0
local consumer = client:consumer {
  stream = stream,
  application = "consumer-example",
  store = kinesis.checkpoints.file { path = checkpoint_file },
  idle_time_between_reads = 0.5,
  stop_after_idle = 2,                -- return once every shard is read to its end
  progress = 1,                       -- a progress line (stderr) every second
  handler = function(records, ctx)
    -- records arrive deaggregated; raising here would hand the batch over again
    seen = seen + #records
    local last = records[#records]
    print(("%s: %d records, last %s/%s, %d ms behind"):format(ctx.shard_id, #records,
      last.SequenceNumber:sub(-8), tostring(last.SubSequenceNumber or "-"), ctx.millis_behind or 0))
  end,
}

local ok, err = consumer:run()
local stats = consumer:stats()
print(("read %d records (%d bytes) from %s with %d checkpoints"):format(stats.records, stats.bytes, stream,
  stats.checkpoints))
os.remove(checkpoint_file)
if not given then client:delete_stream { StreamName = stream } end
if not ok then
  io.stderr:write("consumer failed: ", tostring(err), "\n")
  os.exit(1)
end
if not given and seen ~= expected then
  io.stderr:write(("expected %d records, read %d\n"):format(expected, seen))
  os.exit(1)
end
