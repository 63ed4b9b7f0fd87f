-- producer.lua - the KPL-class producer: creates a stream (unless
-- STREAM_NAME names one), puts RECORDS records (3,000 by default) through
-- client:producer from a plain script, prints a progress line as it goes
-- and a summary of the outcomes, then reads the stream back (deaggregated)
-- to show that every acknowledged record is there.
--
--   KINESIS_ENDPOINT=http://127.0.0.1:4568 lua5.4 examples/producer.lua
--
-- Without KINESIS_ENDPOINT the client resolves the endpoint from the region
-- (AWS_REGION) and reads credentials from the environment.

local kinesis = require "kinesis"

local endpoint = os.getenv("KINESIS_ENDPOINT")
local credentials
if endpoint and not os.getenv("AWS_ACCESS_KEY_ID") then
  -- local servers accept any key; real endpoints need real credentials
  credentials = { access_key_id = "AKIDLOCAL", secret_access_key = "local-secret" }
end

local client = assert(kinesis.new {
  endpoint = endpoint,
  region = os.getenv("AWS_REGION") or "us-east-1",
  credentials = credentials,
})

local function check(out, err)
  if not out then
    io.stderr:write("error: ", tostring(err), "\n")
    os.exit(1)
  end
  return out
end

local stream = os.getenv("STREAM_NAME")
local created = false
if not stream then
  stream = "producer-" .. os.time()
  print(("creating stream %s with 4 shards on %s"):format(stream, client.endpoint.url))
  check(client:create_stream { StreamName = stream, ShardCount = 4 })
  check(client:wait("stream_exists", { StreamName = stream }, { delay = 0.2, max_attempts = 100 }))
  created = true
end

local total = tonumber(os.getenv("RECORDS")) or 3000
local acked, failed = 0, {}

-- every record gets exactly one outcome
local producer = client:producer {
  stream = stream,
  aggregate = true,          -- KPL aggregation: many small records per Kinesis record
  linger = 0.1,              -- a record waits at most this long for others to batch with
  record_ttl = 30,           -- not acknowledged by then: reported failed with code "Expired"
  on_result = function(r)
    if r.ok then
      acked = acked + 1
    else
      failed[#failed + 1] = r
    end
  end,
}

print(("putting %d records through the producer"):format(total))
for i = 1, total do
  local event = ('{"event":%d,"user":"user-%d","note":"%s"}'):format(i, i % 97, ("x"):rep(i % 200))
  check(producer:put { PartitionKey = "user-" .. (i % 97), Data = event, user = i })
  if i % 1000 == 0 then print(producer:progress()) end
end
check(producer:flush())      -- returns once every record put so far has its outcome
print(producer:progress())

local st = producer:stats()
print(("acknowledged %d, failed %d, retried %d, in %d PutRecords calls (%d aggregates)"):format(
  acked, #failed, st.retried, st.requests, st.aggregates))
for _, r in ipairs(failed) do print("failed:", r.record.user, tostring(r.err)) end
check(producer:close())

-- read back, as a consumer would (kinesis.deaggregate unpacks the aggregates)
local found = 0
for shard, err in client:items("list_shards", { StreamName = stream }) do
  check(shard, err)
  local it = check(client:get_shard_iterator { StreamName = stream, ShardId = shard.ShardId,
                                               ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
  while it do
    local out = check(client:get_records { ShardIterator = it })
    for _, r in ipairs(out.Records) do
      found = found + #check(kinesis.deaggregate(r))
    end
    if #out.Records == 0 then break end
    it = out.NextShardIterator
  end
end
print(("read %d records back (acknowledged %d)"):format(found, acked))

if created then check(client:delete_stream { StreamName = stream }) end
if acked ~= total or found < acked then os.exit(1) end
