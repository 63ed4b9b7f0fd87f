-- read_shards.lua - read every shard of a stream at once from one Lua
-- thread: one task per shard inside kinesis.run, all requests in flight
-- together over one curl multi handle.
--
--   eval "$(sh tools/local-kinesis.sh --background)"   # or any endpoint and credentials
--   lua5.4 examples/read_shards.lua

local kinesis = require "kinesis"

local endpoint = os.getenv("KINESIS_ENDPOINT")
local client = assert(kinesis.new {
  endpoint = endpoint,
  region = os.getenv("AWS_REGION") or "us-east-1",
  credentials = (endpoint and not os.getenv("AWS_ACCESS_KEY_ID"))
    and { access_key_id = "AKIDLOCAL", secret_access_key = "local-secret" } or nil,
})
local stream = os.getenv("STREAM_NAME") or ("concurrency-example-" .. os.time())

assert(client:create_stream { StreamName = stream, ShardCount = 8 })
assert(client:wait("stream_exists", { StreamName = stream }, { delay = 0.5, max_delay = 5, timeout = 120 }))

-- 200 records spread over the shards by their partition keys
local batch = {}
for i = 1, 200 do batch[i] = { PartitionKey = "key-" .. i, Data = "record " .. i } end
local put = assert(client:put_records { StreamName = stream, Records = batch })
print(("wrote %d records (%d failed)"):format(#put.Records, put.FailedRecordCount))

local shards = assert(client:list_shards { StreamName = stream }).Shards

local results = kinesis.run(function()
  local tasks = {}
  for _, shard in ipairs(shards) do
    tasks[#tasks + 1] = kinesis.spawn(function()
      local it = assert(client:get_shard_iterator { StreamName = stream, ShardId = shard.ShardId,
        ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
      local out = assert(client:get_records { ShardIterator = it, Limit = 1000 })
      return shard.ShardId, #out.Records
    end)
  end
  return kinesis.wait_all(tasks)
end)

local total = 0
for _, r in ipairs(results) do
  if not r[1] then error(r[2]) end
  print(("  %s: %d records"):format(r[2], r[3]))
  total = total + r[3]
end
print(("read %d records from %d shards concurrently"):format(total, #shards))
assert(client:delete_stream { StreamName = stream })
if total ~= 200 then os.exit(1) end
