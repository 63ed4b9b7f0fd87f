-- quickstart.lua - create a stream, wait until it is ACTIVE, put records
-- (PutRecord and PutRecords, binary data included), read them all back from
-- every shard with GetShardIterator/GetRecords, and delete the stream.
--
--   KINESIS_ENDPOINT=http://127.0.0.1:4568 lua5.4 examples/quickstart.lua
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

local stream = os.getenv("STREAM_NAME") or ("quickstart-" .. os.time())

local function check(out, err)
  if not out then
    io.stderr:write("error: ", tostring(err), "\n")
    os.exit(1)
  end
  return out
end

local function sleep(seconds)
  os.execute("sleep " .. tonumber(seconds))
end

print(("creating stream %s with 2 shards on %s"):format(stream, client.endpoint.url))
check(client:create_stream { StreamName = stream, ShardCount = 2 })

local summary
for _ = 1, 120 do
  summary = check(client:describe_stream_summary { StreamName = stream }).StreamDescriptionSummary
  if summary.StreamStatus == "ACTIVE" then break end
  sleep(1)
end
print(("stream is %s, %d open shards"):format(summary.StreamStatus, summary.OpenShardCount))

-- PutRecord: one record, text
local put = check(client:put_record { StreamName = stream, PartitionKey = "greeting", Data = "hello, kinesis" })
print(("PutRecord -> %s, sequence %s"):format(put.ShardId, put.SequenceNumber))

-- PutRecords: a batch, binary data included
local batch = {}
for i = 1, 10 do
  batch[i] = { PartitionKey = "user-" .. i, Data = ("event %d \0\255\1"):format(i) }
end
local many = check(client:put_records { StreamName = stream, Records = batch })
print(("PutRecords -> %d records, %d failed"):format(#many.Records, many.FailedRecordCount))

-- read everything back from every shard
local total = 0
local shards = check(client:list_shards { StreamName = stream }).Shards
for _, shard in ipairs(shards) do
  local it = check(client:get_shard_iterator { StreamName = stream, ShardId = shard.ShardId,
    ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
  local n = 0
  while it do
    local out = check(client:get_records { ShardIterator = it, Limit = 1000 })
    for _, r in ipairs(out.Records) do
      n = n + 1
      local shown = r.Data:gsub("[^%g ]", function(c) return ("\\x%02x"):format(c:byte()) end)
      print(("  %s  %-10s %s"):format(shard.ShardId, r.PartitionKey, shown))
    end
    -- an empty page at the tip of the shard means everything has been read
    if #out.Records == 0 or out.MillisBehindLatest == 0 and #out.Records < 1000 then break end
    it = out.NextShardIterator
  end
  total = total + n
end
print(("read %d records back (wrote %d)"):format(total, 1 + #batch))

check(client:delete_stream { StreamName = stream })
print("deleted stream " .. stream)
client:close()
if total ~= 1 + #batch then os.exit(1) end
