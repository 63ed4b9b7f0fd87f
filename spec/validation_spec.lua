-- Bad input is refused before anything is sent: each case returns a
-- validation error naming the member path and the rule, and the loopback
-- server counts zero requests.

local kinesis = require "kinesis"
local peers = require "support.peers"

local ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
local CONSUMER = ARN .. "/consumer/c:1700000000"
local MAX = "340282366920938463463374607431768211455"

local function records(n, extra)
  local r = {}
  for i = 1, n do r[i] = { PartitionKey = "k" .. i, Data = "x" } end
  if extra then extra(r) end
  return r
end

-- { operation, params, expected field path, expected rule }
local cases = {
  { "put_record", { StreamName = "s", PartitionKey = "k" }, "Data", "required" },
  { "put_record", { StreamNmae = "s", PartitionKey = "k", Data = "x" }, "StreamNmae", "unknown" },
  { "put_record", { PartitionKey = "k", Data = "x" }, "StreamName", "required" },
  { "put_record", { StreamName = "s", PartitionKey = "", Data = "x" }, "PartitionKey", "length" },
  { "put_record", { StreamName = "s", PartitionKey = string.rep("é", 257), Data = "x" }, "PartitionKey", "length" },
  { "put_record", { StreamName = "s", PartitionKey = "k", Data = 42 }, "Data", "type" },
  { "put_record", { StreamName = "s", PartitionKey = "k", Data = string.rep("x", 10485761) }, "Data", "length" },
  { "put_record", { StreamName = "s", PartitionKey = "k", Data = "x", ExplicitHashKey = "-1" }, "ExplicitHashKey", "pattern" },
  { "put_record", { StreamName = "s", PartitionKey = "k", Data = "x", ExplicitHashKey = "01" }, "ExplicitHashKey", "pattern" },
  { "put_record", { StreamName = "s", PartitionKey = "k", Data = "x", ExplicitHashKey = "340282366920938463463374607431768211456" }, "ExplicitHashKey", "range" },
  { "put_record", { StreamName = "bad name!", PartitionKey = "k", Data = "x" }, "StreamName", "pattern" },
  { "put_record", { StreamName = string.rep("s", 129), PartitionKey = "k", Data = "x" }, "StreamName", "length" },
  { "put_record", { StreamName = "s", PartitionKey = "k\255", Data = "x" }, "PartitionKey", "utf8" },
  { "put_record", { StreamName = "s", PartitionKey = "k", Data = "x", DryRun = "yes" }, "DryRun", "type" },
  { "put_records", { StreamName = "s", Records = {} }, "Records", "length" },
  { "put_records", { StreamName = "s", Records = records(501) }, "Records", "length" },
  { "put_records", { StreamName = "s", Records = records(5, function(r) r[3].Data = nil end) }, "Records[3].Data", "required" },
  { "put_records", { StreamName = "s", Records = records(5, function(r) r[3].PartitionKey = "" end) }, "Records[3].PartitionKey", "length" },
  { "put_records", { StreamName = "s", Records = records(5, function(r) r[4].Data = true end) }, "Records[4].Data", "type" },
  { "put_records", { StreamName = "s", Records = records(2, function(r) r[2].Partition = "x" end) }, "Records[2].Partition", "unknown" },
  { "put_records", { StreamName = "s", Records = { a = 1 } }, "Records", "type" },
  { "create_stream", { StreamName = "s", ShardCount = 0 }, "ShardCount", "range" },
  { "create_stream", { StreamName = "s", ShardCount = 1.5 }, "ShardCount", "type" },
  { "create_stream", { StreamName = "s", ShardCount = "2" }, "ShardCount", "type" },
  { "create_stream", { StreamName = "s", StreamModeDetails = { StreamMode = "FAST" } }, "StreamModeDetails.StreamMode", "enum" },
  { "create_stream", { StreamName = "s", StreamModeDetails = {} }, "StreamModeDetails.StreamMode", "required" },
  { "create_stream", { StreamName = "s", Tags = { [string.rep("k", 129)] = "v" } }, 'Tags["' .. string.rep("k", 129) .. '"]', "length" },
  { "create_stream", { StreamName = "s", MaxRecordSizeInKiB = 100 }, "MaxRecordSizeInKiB", "range" },
  { "get_records", { ShardIterator = "it", Limit = 10001 }, "Limit", "range" },
  { "get_records", { Limit = 5 }, "ShardIterator", "required" },
  { "get_shard_iterator", { StreamName = "s", ShardId = "shardId-0", ShardIteratorType = "OLDEST" }, "ShardIteratorType", "enum" },
  { "get_shard_iterator", { StreamName = "s", ShardId = "shard id", ShardIteratorType = "LATEST" }, "ShardId", "pattern" },
  { "get_shard_iterator", { StreamName = "s", ShardId = "shardId-0", ShardIteratorType = "AT_SEQUENCE_NUMBER", StartingSequenceNumber = "12x" }, "StartingSequenceNumber", "pattern" },
  { "split_shard", { StreamName = "s", ShardToSplit = "shardId-0", NewStartingHashKey = MAX .. "0" }, "NewStartingHashKey", "pattern" },
  { "split_shard", { StreamName = "s", ShardToSplit = "shardId-0", NewStartingHashKey = "340282366920938463463374607431768211457" }, "NewStartingHashKey", "range" },
  { "list_shards", { StreamName = "s", MaxResults = 0 }, "MaxResults", "range" },
  { "list_shards", { StreamName = "s", NextToken = "tok" }, "StreamName", "conflict" },
  { "list_shards", {}, "StreamName", "required" },
  { "list_tags_for_stream", { StreamName = "s", Limit = 51 }, "Limit", "range" },
  { "add_tags_to_stream", { StreamName = "s", Tags = {} }, "Tags", "length" },
  { "remove_tags_from_stream", { StreamName = "s", TagKeys = { "a", 7 } }, "TagKeys[2]", "type" },
  { "describe_stream_consumer", { StreamARN = ARN }, "ConsumerARN", "required" },
  { "describe_stream_consumer", { ConsumerARN = "arn:aws:kinesis:us-east-1:123:stream/s/consumer/c:1" }, "ConsumerARN", "pattern" },
  { "register_stream_consumer", { StreamARN = "arn:aws:s3:::bucket", ConsumerName = "c" }, "StreamARN", "pattern" },
  { "enable_enhanced_monitoring", { StreamName = "s", ShardLevelMetrics = { "Everything" } }, "ShardLevelMetrics[1]", "enum" },
  { "enable_enhanced_monitoring", { StreamName = "s", ShardLevelMetrics = { "ALL", "ALL", "ALL", "ALL", "ALL", "ALL", "ALL", "ALL" } }, "ShardLevelMetrics", "length" },
  { "update_stream_mode", { StreamARN = ARN, StreamModeDetails = { StreamMode = "ON_DEMAND", Extra = 1 } }, "StreamModeDetails.Extra", "unknown" },
  { "subscribe_to_shard", { ConsumerARN = CONSUMER, ShardId = "shardId-0", StartingPosition = { Type = "NOW" } }, "StartingPosition.Type", "enum" },
  { "create_channel", { ChannelName = "c", ServiceExecutionRoleARN = "arn:aws:iam::123456789012:role/r", StreamConfigurationList = {} }, "StreamConfigurationList", "length" },
  { "describe_channel", { ChannelARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s" }, "ChannelARN", "pattern" },
  { "update_stream_record_distribution_strategy", { StreamARN = ARN, RecordDistributionStrategy = "RANDOM" }, "RecordDistributionStrategy", "enum" },
  { "list_streams", { Limit = -1 }, "Limit", "range" },
  { "describe_limits", { Anything = true }, "Anything", "unknown" },
}

describe("validation before sending", function()
  local stub, c

  lazy_setup(function()
    stub = peers.start("stub")
    c = assert(kinesis.new { endpoint = stub.endpoint, region = "us-east-1", credentials = peers.credentials })
  end)
  lazy_teardown(function()
    if c then c:close() end
    if stub then stub.stop() end
  end)

  it("has at least 30 distinct cases", function()
    assert.is_true(#cases >= 30)
  end)

  for i, case in ipairs(cases) do
    local op, params, field, rule = case[1], case[2], case[3], case[4]
    it(string.format("#%d %s: %s (%s)", i, op, field:sub(1, 60), rule), function()
      local out, err = c[op](c, params)
      if op == "subscribe_to_shard" and out ~= nil then
        -- an event iterator: a refused subscription yields false, err first
        out, err = out()
        assert.is_false(out)
        out = nil
      end
      assert.is_nil(out)
      assert.is_table(err)
      assert.equal("validation", err.kind)
      assert.equal(field, err.field)
      assert.equal(rule, err.rule)
      assert.truthy(err.message:find(field, 1, true), "message names the field: " .. err.message)
      assert.is_false(err.retryable)
      assert.is_truthy(tostring(err):find("validation", 1, true))
    end)
  end

  it("sent nothing for any of them", function()
    assert.equal(0, #stub:requests())
  end)

  it("accepts the valid counterparts (and they are sent)", function()
    stub:queue { { status = 200, body = '{"ShardId":"shardId-000000000000","SequenceNumber":"1"}' } }
    local out, err = c:put_record { StreamName = "s", PartitionKey = string.rep("é", 256), Data = "x",
      ExplicitHashKey = MAX }
    assert.is_nil(err)
    assert.equal("shardId-000000000000", out.ShardId)
    assert.equal(1, #stub:requests())
  end)

  it("raises for programming misuse: unknown operation, non-table params", function()
    assert.has_error(function() c:call("PutRecordz", {}) end)
    assert.has_error(function() c:put_record("s") end)
  end)
end)
