-- subscribe.lua - enhanced fan-out: register a consumer, write records
-- (binary ones included), then read every shard at once with
-- client:subscribe inside kinesis.run: one task per shard, each a
-- SubscribeToShard event stream that is renewed as subscriptions end.
-- Cleans up (consumer, stream) and exits 1 if a record went missing.
--
--   KINESIS_ENDPOINT=http://127.0.0.1:4568 lua5.4 examples/subscribe.lua
--
-- Against kinesis-local's TLS port (HTTP/2; its certificate names no host,
-- so verification must be turned off explicitly for that server):
--   KINESIS_ENDPOINT=https://127.0.0.1:4567 KINESIS_INSECURE=1 lua5.4 examples/subscribe.lua

local kinesis = require "kinesis"

local endpoint = os.getenv("KINESIS_ENDPOINT")
local credentials
if endpoint and not os.getenv("AWS_ACCESS_KEY_ID") then
  credentials = { access_key_id = "AKIDLOCAL", secret_access_key = "local-secret" }
end

local client = assert(kinesis.new {
  endpoint = endpoint,
  region = os.getenv("AWS_REGION") or "us-east-1",
  credentials = credentials,
  verify = os.getenv("KINESIS_INSECURE") ~= "1",
  -- a subscription that stays silent this long is treated as dead
  timeout = { event = 15 },
})

local stream = os.getenv("STREAM_NAME") or ("subscribe-example-" .. os.time())

local function check(out, err)
  if not out then
    io.stderr:write("error: ", tostring(err), "\n")
    os.exit(1)
  end
  return out
end

check(client:create_stream { StreamName = stream, ShardCount = 2 })
check(client:wait("stream_exists", { StreamName = stream }, { delay = 0.5, max_delay = 5, timeout = 120 }))
local stream_arn = check(client:describe_stream_summary { StreamName = stream }).StreamDescriptionSummary.StreamARN

-- an enhanced fan-out consumer: its own 2 MB/s per shard, pushed over HTTP/2
local consumer = check(client:register_stream_consumer { StreamARN = stream_arn, ConsumerName = "example" })
local consumer_arn = consumer.Consumer.ConsumerARN
check(client:wait("consumer_active", { ConsumerARN = consumer_arn }, { delay = 0.5, timeout = 60 }))

local wanted = {}
local batch = {}
for i = 1, 40 do
  local data = i % 4 == 0 and ("\0\255binary\1" .. i) or ("record " .. i)
  batch[i] = { PartitionKey = "key-" .. i, Data = data }
  wanted[data] = true
end
local put = check(client:put_records { StreamName = stream, Records = batch })
print(("wrote %d records (%d failed)"):format(#put.Records, put.FailedRecordCount))

local shards = check(client:list_shards { StreamName = stream }).Shards

local results = kinesis.run(function()
  local tasks = {}
  for _, shard in ipairs(shards) do
    tasks[#tasks + 1] = kinesis.spawn(function()
      local got, heartbeats = {}, 0
      -- client:subscribe renews the subscription (every 5 minutes on AWS)
      -- after the last ContinuationSequenceNumber; it ends at a shard's end
      for event, err in client:subscribe { ConsumerARN = consumer_arn, ShardId = shard.ShardId,
                                           StartingPosition = { Type = "TRIM_HORIZON" } } do
        if not event then error(err) end
        for _, record in ipairs(event.Records) do
          got[#got + 1] = record.Data         -- raw bytes
        end
        if #event.Records == 0 then heartbeats = heartbeats + 1 end
        -- the records were written before we subscribed: once the shard
        -- is caught up (MillisBehindLatest 0) an empty event means done
        if event.MillisBehindLatest == 0 and heartbeats >= 1 then break end
      end
      return shard.ShardId, got
    end)
  end
  return kinesis.wait_all(tasks)
end)

local seen = 0
for _, r in ipairs(results) do
  if not r[1] then
    io.stderr:write("error: ", tostring(r[2]), "\n")
    os.exit(1)
  end
  print(("  %s: %d records"):format(r[2], #r[3]))
  for _, data in ipairs(r[3]) do
    if wanted[data] then
      wanted[data] = nil
      seen = seen + 1
    end
  end
end
print(("received %d of %d records through enhanced fan-out"):format(seen, #batch))

check(client:deregister_stream_consumer { ConsumerARN = consumer_arn })
check(client:delete_stream { StreamName = stream, EnforceConsumerDeletion = true })
client:close()
if seen ~= #batch then os.exit(1) end
