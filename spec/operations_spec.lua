-- Every operation kinesis-local implements, called through the client with
-- assertions on what comes back (types included: integers are integers,
-- blobs are raw bytes, nulls are absent).

local peers = require "support.peers"
local sleep = require("socket").sleep

local is_integer = math.type and function(v) return math.type(v) == "integer" end
  or function(v) return type(v) == "number" and v == math.floor(v) end

describe("operations against kinesis-local", function()
  local srv, c
  local S = "ops-stream"
  local arn

  local function wait_active(name)
    for _ = 1, 200 do
      local out = assert(c:describe_stream_summary { StreamName = name })
      if out.StreamDescriptionSummary.StreamStatus == "ACTIVE" then return out end
      sleep(0.05)
    end
    error("stream " .. name .. " never became ACTIVE")
  end

  local function wait_consumer(consumer_arn, want)
    for _ = 1, 200 do
      local out = assert(c:describe_stream_consumer { ConsumerARN = consumer_arn })
      if out.ConsumerDescription.ConsumerStatus == want then return out end
      sleep(0.05)
    end
    error("consumer never became " .. want)
  end

  local function open_shards(name)
    local out = assert(c:list_shards { StreamName = name })
    local open = {}
    for _, s in ipairs(out.Shards) do
      if not s.SequenceNumberRange.EndingSequenceNumber then open[#open + 1] = s end
    end
    return open, out.Shards
  end

  lazy_setup(function()
    local fast = "100ms"
    srv = peers.start("kinesis-local", { env = {
      CREATE_STREAM_DURATION = fast, DELETE_STREAM_DURATION = fast,
      REGISTER_STREAM_CONSUMER_DURATION = fast, DEREGISTER_STREAM_CONSUMER_DURATION = fast,
      START_STREAM_ENCRYPTION_DURATION = fast, STOP_STREAM_ENCRYPTION_DURATION = fast,
      MERGE_SHARDS_DURATION = fast, SPLIT_SHARD_DURATION = fast,
      UPDATE_SHARD_COUNT_DURATION = fast, UPDATE_STREAM_MODE_DURATION = fast,
      SHARD_LIMIT = "100",
    } })
    c = peers.client(srv)
    assert(c:create_stream { StreamName = S, ShardCount = 2 })
    arn = wait_active(S).StreamDescriptionSummary.StreamARN
  end)

  lazy_teardown(function()
    if c then c:close() end
    if srv then srv.stop() end
  end)

  it("CreateStream returns an empty result and the stream becomes ACTIVE", function()
    local out, err = c:create_stream { StreamName = "ops-created", ShardCount = 1 }
    assert.is_nil(err)
    assert.same({}, out)
    local summary = wait_active("ops-created").StreamDescriptionSummary
    assert.equal("ops-created", summary.StreamName)
    assert.equal(1, summary.OpenShardCount)
  end)

  it("DescribeStreamSummary gives integers, numbers for timestamps and no nulls", function()
    local d = assert(c:describe_stream_summary { StreamName = S }).StreamDescriptionSummary
    assert.equal(S, d.StreamName)
    assert.matches("^arn:aws:kinesis:us%-east%-1:%d+:stream/ops%-stream$", d.StreamARN)
    assert.is_true(is_integer(d.OpenShardCount))
    assert.equal(2, d.OpenShardCount)
    assert.is_true(is_integer(d.RetentionPeriodHours))
    assert.equal("number", type(d.StreamCreationTimestamp))
    assert.is_true(d.StreamCreationTimestamp > 1.6e9)
    assert.is_nil(d.KeyId) -- JSON null in the response
    assert.equal("PROVISIONED", d.StreamModeDetails.StreamMode)
  end)

  it("DescribeStream lists shards with 128-bit hash keys as decimal strings", function()
    local d = assert(c:describe_stream { StreamName = S }).StreamDescription
    assert.equal(2, #d.Shards)
    assert.is_false(d.HasMoreShards)
    assert.equal("0", d.Shards[1].HashKeyRange.StartingHashKey)
    assert.equal("340282366920938463463374607431768211455", d.Shards[2].HashKeyRange.EndingHashKey)
    assert.equal("string", type(d.Shards[1].SequenceNumberRange.StartingSequenceNumber))
  end)

  it("ListStreams and ListShards", function()
    local out = assert(c:list_streams {})
    local found = false
    for _, n in ipairs(out.StreamNames) do if n == S then found = true end end
    assert.is_true(found)
    assert.equal("boolean", type(out.HasMoreStreams))
    local shards = assert(c:list_shards { StreamName = S }).Shards
    assert.equal(2, #shards)
    assert.equal("shardId-000000000000", shards[1].ShardId)
  end)

  it("PutRecord, PutRecords, GetShardIterator and GetRecords round-trip binary data", function()
    local blob = "bin\0\255\1\128" .. string.rep("\0", 3)
    local one = assert(c:put_record { StreamName = S, PartitionKey = "k1", Data = blob })
    assert.matches("^shardId%-%d+$", one.ShardId)
    assert.matches("^%d+$", one.SequenceNumber)
    local many = assert(c:put_records { StreamName = S, Records = {
      { PartitionKey = "k1", Data = "a" }, { PartitionKey = "k1", Data = "" },
      { PartitionKey = "k1", Data = "\255\254" },
    } })
    assert.equal(0, many.FailedRecordCount)
    assert.is_true(is_integer(many.FailedRecordCount))
    assert.equal(3, #many.Records)
    local it = assert(c:get_shard_iterator { StreamName = S, ShardId = one.ShardId,
      ShardIteratorType = "AT_SEQUENCE_NUMBER", StartingSequenceNumber = one.SequenceNumber })
    local got = assert(c:get_records { ShardIterator = it.ShardIterator, Limit = 10 })
    assert.equal(4, #got.Records)
    assert.equal(blob, got.Records[1].Data)
    assert.equal("a", got.Records[2].Data)
    assert.equal("", got.Records[3].Data)
    assert.equal("\255\254", got.Records[4].Data)
    assert.equal("k1", got.Records[1].PartitionKey)
    assert.equal(one.SequenceNumber, got.Records[1].SequenceNumber)
    assert.equal("number", type(got.Records[1].ApproximateArrivalTimestamp))
    assert.is_true(is_integer(got.MillisBehindLatest))
    assert.equal("string", type(got.NextShardIterator))
  end)

  it("AddTagsToStream, ListTagsForStream, RemoveTagsFromStream", function()
    assert(c:add_tags_to_stream { StreamName = S, Tags = { team = "data", env = "test" } })
    local out = assert(c:list_tags_for_stream { StreamName = S })
    assert.is_false(out.HasMoreTags)
    local tags = {}
    for _, t in ipairs(out.Tags) do tags[t.Key] = t.Value end
    assert.same({ team = "data", env = "test" }, tags)
    assert(c:remove_tags_from_stream { StreamName = S, TagKeys = { "env" } })
    out = assert(c:list_tags_for_stream { StreamName = S })
    assert.equal(1, #out.Tags)
    assert.equal("team", out.Tags[1].Key)
  end)

  it("TagResource, ListTagsForResource, UntagResource", function()
    assert(c:tag_resource { ResourceARN = arn, Tags = { owner = "me" } })
    local out = assert(c:list_tags_for_resource { ResourceARN = arn })
    local tags = {}
    for _, t in ipairs(out.Tags) do tags[t.Key] = t.Value end
    assert.equal("me", tags.owner)
    assert(c:untag_resource { ResourceARN = arn, TagKeys = { "owner" } })
    out = assert(c:list_tags_for_resource { ResourceARN = arn })
    for _, t in ipairs(out.Tags) do assert.not_equal("owner", t.Key) end
  end)

  it("IncreaseStreamRetentionPeriod and DecreaseStreamRetentionPeriod", function()
    assert(c:increase_stream_retention_period { StreamName = S, RetentionPeriodHours = 48 })
    assert.equal(48, wait_active(S).StreamDescriptionSummary.RetentionPeriodHours)
    assert(c:decrease_stream_retention_period { StreamName = S, RetentionPeriodHours = 24 })
    assert.equal(24, wait_active(S).StreamDescriptionSummary.RetentionPeriodHours)
  end)

  it("EnableEnhancedMonitoring and DisableEnhancedMonitoring", function()
    local out = assert(c:enable_enhanced_monitoring { StreamName = S, ShardLevelMetrics = { "IncomingBytes", "OutgoingRecords" } })
    assert.equal(S, out.StreamName)
    table.sort(out.DesiredShardLevelMetrics)
    assert.same({ "IncomingBytes", "OutgoingRecords" }, out.DesiredShardLevelMetrics)
    out = assert(c:disable_enhanced_monitoring { StreamName = S, ShardLevelMetrics = { "IncomingBytes" } })
    assert.same({ "OutgoingRecords" }, out.DesiredShardLevelMetrics)
  end)

  it("StartStreamEncryption and StopStreamEncryption", function()
    assert(c:start_stream_encryption { StreamName = S, EncryptionType = "KMS", KeyId = "alias/aws/kinesis" })
    local d = wait_active(S).StreamDescriptionSummary
    assert.equal("KMS", d.EncryptionType)
    assert.equal("alias/aws/kinesis", d.KeyId)
    assert(c:stop_stream_encryption { StreamName = S, EncryptionType = "KMS", KeyId = "alias/aws/kinesis" })
    assert.equal("NONE", wait_active(S).StreamDescriptionSummary.EncryptionType)
  end)

  it("RegisterStreamConsumer, DescribeStreamConsumer, ListStreamConsumers, DeregisterStreamConsumer", function()
    local reg = assert(c:register_stream_consumer { StreamARN = arn, ConsumerName = "ops-consumer" })
    assert.equal("ops-consumer", reg.Consumer.ConsumerName)
    assert.matches("/consumer/ops%-consumer:%d+$", reg.Consumer.ConsumerARN)
    assert.equal("number", type(reg.Consumer.ConsumerCreationTimestamp))
    local d = wait_consumer(reg.Consumer.ConsumerARN, "ACTIVE").ConsumerDescription
    assert.equal(arn, d.StreamARN)
    local by_name = assert(c:describe_stream_consumer { StreamARN = arn, ConsumerName = "ops-consumer" })
    assert.equal(reg.Consumer.ConsumerARN, by_name.ConsumerDescription.ConsumerARN)
    local list = assert(c:list_stream_consumers { StreamARN = arn })
    assert.equal(1, #list.Consumers)
    assert.equal("ops-consumer", list.Consumers[1].ConsumerName)
    assert(c:deregister_stream_consumer { ConsumerARN = reg.Consumer.ConsumerARN })
    for _ = 1, 200 do
      local out, err = c:describe_stream_consumer { ConsumerARN = reg.Consumer.ConsumerARN }
      if not out then assert.equal("ResourceNotFoundException", err.code) break end
      sleep(0.05)
    end
    assert.equal(0, #assert(c:list_stream_consumers { StreamARN = arn }).Consumers)
  end)

  it("SplitShard and MergeShards", function()
    assert(c:create_stream { StreamName = "ops-reshard", ShardCount = 2 })
    wait_active("ops-reshard")
    local open = open_shards("ops-reshard")
    assert(c:split_shard { StreamName = "ops-reshard", ShardToSplit = open[1].ShardId,
      NewStartingHashKey = "85070591730234615865843651857942052864" })
    wait_active("ops-reshard")
    local open2, all = open_shards("ops-reshard")
    assert.equal(3, #open2)
    assert.equal(4, #all)
    -- merge the two children of the split
    local a, b
    for _, s in ipairs(open2) do
      if s.ParentShardId == open[1].ShardId then
        if not a then a = s else b = s end
      end
    end
    assert.truthy(a and b)
    assert(c:merge_shards { StreamName = "ops-reshard", ShardToMerge = a.ShardId, AdjacentShardToMerge = b.ShardId })
    wait_active("ops-reshard")
    assert.equal(2, #open_shards("ops-reshard"))
  end)

  it("UpdateShardCount", function()
    assert(c:create_stream { StreamName = "ops-scale", ShardCount = 2 })
    wait_active("ops-scale")
    local out = assert(c:update_shard_count { StreamName = "ops-scale", TargetShardCount = 4, ScalingType = "UNIFORM_SCALING" })
    assert.equal(2, out.CurrentShardCount)
    assert.equal(4, out.TargetShardCount)
    assert.is_true(is_integer(out.TargetShardCount))
    wait_active("ops-scale")
    assert.equal(4, #open_shards("ops-scale"))
  end)

  it("UpdateStreamMode and UpdateStreamWarmThroughput", function()
    assert(c:create_stream { StreamName = "ops-mode", ShardCount = 1 })
    local sarn = wait_active("ops-mode").StreamDescriptionSummary.StreamARN
    assert(c:update_stream_mode { StreamARN = sarn, StreamModeDetails = { StreamMode = "ON_DEMAND" } })
    assert.equal("ON_DEMAND", wait_active("ops-mode").StreamDescriptionSummary.StreamModeDetails.StreamMode)
    local out, err = c:update_stream_warm_throughput { StreamName = "ops-mode", WarmThroughputMiBps = 10 }
    assert.is_nil(err)
    assert.equal("ops-mode", out.StreamName)
    assert.equal(10, out.WarmThroughput.TargetMiBps)
  end)

  it("UpdateMaxRecordSize", function()
    local out, err = c:update_max_record_size { StreamARN = arn, MaxRecordSizeInKiB = 2048 }
    assert.is_nil(err)
    assert.same({}, out)
    assert.equal(2048, wait_active(S).StreamDescriptionSummary.MaxRecordSizeInKiB)
  end)

  it("PutResourcePolicy, GetResourcePolicy, DeleteResourcePolicy", function()
    local policy = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kinesis:GetRecords","Resource":"' .. arn .. '"}]}'
    assert(c:put_resource_policy { ResourceARN = arn, Policy = policy })
    local out = assert(c:get_resource_policy { ResourceARN = arn })
    assert.equal(policy, out.Policy)
    assert(c:delete_resource_policy { ResourceARN = arn })
    local none, err = c:get_resource_policy { ResourceARN = arn }
    assert.is_nil(none)
    assert.equal("ResourceNotFoundException", err.code)
  end)

  it("DescribeLimits", function()
    local out = assert(c:describe_limits {})
    assert.equal(100, out.ShardLimit)
    assert.is_true(is_integer(out.OpenShardCount))
    assert.is_true(out.OpenShardCount >= 2)
    assert.is_true(is_integer(out.OnDemandStreamCountLimit))
  end)

  it("DescribeAccountSettings and UpdateAccountSettings", function()
    local out, err = c:update_account_settings { MinimumThroughputBillingCommitment = { Status = "ENABLED" } }
    assert.is_nil(err)
    assert.is_table(out) -- kinesis-local answers with an empty body
    out = assert(c:describe_account_settings {})
    local m = out.MinimumThroughputBillingCommitment
    assert.equal("ENABLED", m.Status)
    assert.equal("number", type(m.StartedAt))
    assert.is_nil(m.EndedAt) -- null in the response
  end)

  it("SubscribeToShard through call() says to use the event-stream API", function()
    local out, err = c:call("SubscribeToShard", { ConsumerARN = arn .. "/consumer/x:1", ShardId = "shardId-000000000000",
      StartingPosition = { Type = "TRIM_HORIZON" } })
    assert.is_nil(out)
    assert.equal("protocol", err.kind)
  end)

  it("DeleteStream, then DescribeStream reports ResourceNotFoundException", function()
    assert.same({}, assert(c:delete_stream { StreamName = "ops-created" }))
    local out, err
    for _ = 1, 200 do
      out, err = c:describe_stream { StreamName = "ops-created" }
      if not out then break end
      sleep(0.05)
    end
    assert.is_nil(out)
    assert.equal("aws", err.kind)
    assert.equal("ResourceNotFoundException", err.code)
    assert.equal(400, err.status)
    assert.equal("DescribeStream", err.op)
    assert.is_false(err.retryable)
    assert.matches("^[%x-]+$", err.request_id)
    assert.matches("ResourceNotFoundException", tostring(err))
  end)
end)
