-- paging_and_waiters.lua - create a stream of 12 shards, wait for it with a
-- waiter, list its shards a few at a time with client:items, and wait for
-- the deletion.
--
--   KINESIS_ENDPOINT=http://127.0.0.1:4568 lua5.4 examples/paging_and_waiters.lua

local kinesis = require "kinesis"

local endpoint = os.getenv("KINESIS_ENDPOINT")
local client = assert(kinesis.new {
  endpoint = endpoint,
  region = os.getenv("AWS_REGION") or "us-east-1",
  credentials = (endpoint and not os.getenv("AWS_ACCESS_KEY_ID"))
    and { access_key_id = "AKIDLOCAL", secret_access_key = "local-secret" } or nil,
})
local stream = os.getenv("STREAM_NAME") or ("paging-example-" .. os.time())

assert(client:create_stream { StreamName = stream, ShardCount = 12 })
local out, err, attempts = client:wait("stream_exists", { StreamName = stream },
  { delay = 0.5, max_delay = 5, timeout = 120 })
if not out then error(tostring(err)) end
print(("%s is ACTIVE after %d DescribeStream calls"):format(stream, attempts))

-- five shards per ListShards page; the iterator follows NextToken
local n = 0
for shard, lerr in client:items("list_shards", { StreamName = stream, MaxResults = 5 }) do
  if not shard then error(tostring(lerr)) end
  n = n + 1
  print(("  %s  %s .. %s"):format(shard.ShardId, shard.HashKeyRange.StartingHashKey,
    shard.HashKeyRange.EndingHashKey))
end
print(("listed %d shards"):format(n))

-- pages, when the page itself matters
local pages = 0
for page in client:pages("list_shards", { StreamName = stream, MaxResults = 5 }) do
  if page then pages = pages + 1 end
end
print(("in %d pages of at most 5"):format(pages))

assert(client:delete_stream { StreamName = stream })
assert(client:wait("stream_not_exists", { StreamName = stream }, { delay = 0.5, max_delay = 5, timeout = 120 }))
print("deleted " .. stream)
if n ~= 12 or pages ~= 3 then os.exit(1) end
