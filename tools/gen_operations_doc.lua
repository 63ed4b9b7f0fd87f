-- gen_operations_doc.lua - writes the operations table of docs/operations.md
-- from the generated model (lua/kinesis/model.lua): every operation, its
-- method, link, required members, paging and waiters, so the page cannot
-- drift from what the client offers. Only the one-line summaries are ours.
--
--   lua5.4 tools/gen_operations_doc.lua           rewrite the table in docs/operations.md
--   lua5.4 tools/gen_operations_doc.lua --check   exit 1 when the page differs
--   (LUA_PATH must reach lua/, as tools/test.sh sets it)

local model = require "kinesis.model"
local paging = require "kinesis.paging"
local waiters = require "kinesis.waiters"

local ROOT = (arg[0]:match("^(.*)/tools/[^/]+$") or ".")
local PAGE = ROOT .. "/docs/operations.md"
local BEGIN, END = "<!-- operations: begin (tools/gen_operations_doc.lua) -->", "<!-- operations: end -->"

-- what each operation does, in a few words (the model's own documentation
-- is long HTML; this table is written here)
local SUMMARY = {
  AddTagsToStream = "adds or updates tags on a stream",
  CreateChannel = "creates a channel that delivers stream records to S3 or S3 Tables",
  CreateStream = "creates a stream, provisioned with a shard count or on-demand",
  DecreaseStreamRetentionPeriod = "shortens how long records are kept",
  DeleteChannel = "deletes a channel",
  DeleteResourcePolicy = "removes the resource policy of a stream or consumer",
  DeleteStream = "deletes a stream and its data",
  DeregisterStreamConsumer = "removes an enhanced fan-out consumer",
  DescribeAccountSettings = "shows account-level settings such as the throughput billing commitment",
  DescribeChannel = "shows a channel's configuration and status",
  DescribeLimits = "shows the account's shard and on-demand stream limits and usage",
  DescribeStream = "describes a stream with its shards",
  DescribeStreamConsumer = "describes one enhanced fan-out consumer",
  DescribeStreamSummary = "describes a stream without listing its shards",
  DisableEnhancedMonitoring = "turns shard-level metrics off",
  EnableEnhancedMonitoring = "turns shard-level metrics on",
  GetRecords = "reads records from a shard iterator",
  GetResourcePolicy = "returns the resource policy of a stream or consumer",
  GetShardIterator = "returns an iterator for a position in a shard",
  IncreaseStreamRetentionPeriod = "lengthens how long records are kept",
  ListChannels = "lists channels, optionally by stream",
  ListShards = "lists a stream's shards",
  ListStreamConsumers = "lists a stream's enhanced fan-out consumers",
  ListStreams = "lists the account's streams",
  ListTagsForResource = "lists the tags of a stream, consumer or channel by ARN",
  ListTagsForStream = "lists a stream's tags",
  MergeShards = "merges two adjacent shards into one",
  PutRecord = "writes one record",
  PutRecords = "writes up to 500 records in one call",
  PutResourcePolicy = "attaches a resource policy to a stream or consumer",
  RegisterStreamConsumer = "registers an enhanced fan-out consumer",
  RemoveTagsFromStream = "removes tags from a stream",
  SplitShard = "splits a shard in two at a hash key",
  StartStreamEncryption = "turns on server-side encryption with a KMS key",
  StopStreamEncryption = "turns server-side encryption off",
  SubscribeToShard = "streams a shard's records to a consumer (event stream)",
  TagResource = "adds tags to a stream, consumer or channel by ARN",
  UntagResource = "removes tags from a resource by ARN",
  UpdateAccountSettings = "changes account-level settings",
  UpdateChannel = "changes a channel's destination or logging",
  UpdateMaxRecordSize = "changes the largest record a stream accepts",
  UpdateShardCount = "rescales a provisioned stream to a target shard count",
  UpdateStreamMode = "switches a stream between provisioned and on-demand",
  UpdateStreamRecordDistributionStrategy = "chooses how an on-demand stream spreads records over shards",
  UpdateStreamWarmThroughput = "sets the warm throughput of an on-demand stream",
}

local function required_members(op)
  local shape = op.input and model.shapes[op.input]
  local names = {}
  for name, m in pairs(shape and shape.members or {}) do
    if m.required then names[#names + 1] = "`" .. name .. "`" end
  end
  table.sort(names)
  return #names > 0 and table.concat(names, ", ") or "-"
end

local function waiters_of(name)
  local list = {}
  for wname, w in pairs(waiters.WAITERS) do
    if w.operation == name then list[#list + 1] = "`" .. wname .. "`" end
  end
  table.sort(list)
  return #list > 0 and table.concat(list, ", ") or ""
end

local function table_text()
  local names = {}
  for name in pairs(model.operations) do names[#names + 1] = name end
  table.sort(names)
  local rows = {
    BEGIN,
    "| method | what it does | required members | paged | waiters |",
    "|---|---|---|:---:|---|",
  }
  for _, name in ipairs(names) do
    local op = model.operations[name]
    local summary = SUMMARY[name]
    if not summary then
      io.stderr:write("gen_operations_doc: no summary for ", name, ": add one to SUMMARY\n")
      os.exit(1)
    end
    rows[#rows + 1] = ("| [`client:%s(params)`](https://docs.aws.amazon.com/kinesis/latest/APIReference/API_%s.html) | %s | %s | %s | %s |")
      :format(op.method, name, summary, required_members(op), paging.paginator(op) and "yes" or "", waiters_of(name))
  end
  rows[#rows + 1] = END
  return table.concat(rows, "\n")
end

local f = assert(io.open(PAGE, "rb"))
local page = f:read("a")
f:close()
local b = page:find(BEGIN, 1, true)
local e = page:find(END, 1, true)
if not (b and e) then
  io.stderr:write("gen_operations_doc: ", PAGE, " lacks the ", BEGIN, " ... ", END, " markers\n")
  os.exit(1)
end
local new = page:sub(1, b - 1) .. table_text() .. page:sub(e + #END)
if arg[1] == "--check" then
  if new ~= page then
    io.stderr:write(PAGE, " is out of date: run lua5.4 tools/gen_operations_doc.lua\n")
    os.exit(1)
  end
  return
end
if new ~= page then
  f = assert(io.open(PAGE, "wb"))
  f:write(new)
  f:close()
end
