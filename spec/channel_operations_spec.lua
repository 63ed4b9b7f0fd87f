-- The six operations the local Kinesis servers do not implement (the 2026
-- Channel operations and UpdateStreamRecordDistributionStrategy), checked
-- against a loopback stub: the exact request (target header, JSON body) and
-- the decoding of a model-shaped response.

local peers = require "support.peers"
local cjson = require "cjson"

local ACCOUNT = "123456789012"
local STREAM_ARN = "arn:aws:kinesis:us-east-1:" .. ACCOUNT .. ":stream/orders"
local CHANNEL_ARN = "arn:aws:kinesis:us-east-1:" .. ACCOUNT .. ":channel/orders-to-s3"
local ROLE_ARN = "arn:aws:iam::" .. ACCOUNT .. ":role/kinesis-channel"
local BUCKET_ARN = "arn:aws:s3:::orders-archive"

local description = {
  ChannelName = "orders-to-s3", ChannelARN = CHANNEL_ARN, ChannelId = "ch-0001",
  ChannelStatus = "CREATING", ChannelCreationTimestamp = 1795000000.5,
  ServiceExecutionRoleARN = ROLE_ARN,
  StreamConfigurationList = { {
    StreamARN = STREAM_ARN, StreamCreationTimestamp = 1790000000,
    RecordConfiguration = { RecordFormatType = "JSON" },
  } },
  LoggingConfiguration = { CloudWatchLogs = { Enabled = false } },
  S3DestinationConfiguration = {
    DataFreshnessInSeconds = 300,
    StorageConfiguration = { BucketARN = BUCKET_ARN, ExpectedBucketOwner = ACCOUNT, CompressionType = "ZSTD" },
    DeadLetterQueueS3Configuration = { BucketARN = BUCKET_ARN, ExpectedBucketOwner = ACCOUNT },
  },
  ChannelStatusReason = cjson.null,
}

describe("Channel operations and UpdateStreamRecordDistributionStrategy", function()
  local stub, c

  lazy_setup(function()
    stub = peers.start("stub")
    c = peers.client(stub)
  end)
  lazy_teardown(function()
    if c then c:close() end
    if stub then stub.stop() end
  end)
  before_each(function() stub:reset() end)

  -- the single request the stub saw, with its JSON body decoded
  local function sent(op)
    local reqs = stub:requests()
    assert.equal(1, #reqs)
    local r = reqs[1]
    assert.equal("POST", r.method)
    assert.equal("/", r.path)
    assert.equal("Kinesis_20131202." .. op, r.headers["x-amz-target"])
    assert.equal("application/x-amz-json-1.1", r.headers["content-type"])
    assert.matches("^AWS4%-HMAC%-SHA256 Credential=AKIDTEST/%d+/us%-east%-1/kinesis/aws4_request", r.headers["authorization"])
    return cjson.decode(r.body), r.body
  end

  it("CreateChannel sends the nested configuration and decodes the description", function()
    stub:queue { { status = 200, body = cjson.encode { ChannelDescription = description } } }
    local out, err = c:create_channel {
      ChannelName = "orders-to-s3", ServiceExecutionRoleARN = ROLE_ARN,
      StreamConfigurationList = { { StreamARN = STREAM_ARN, RecordConfiguration = { RecordFormatType = "JSON" } } },
      S3DestinationConfiguration = {
        DataFreshnessInSeconds = 300,
        StorageConfiguration = { BucketARN = BUCKET_ARN, ExpectedBucketOwner = ACCOUNT, CompressionType = "ZSTD" },
        DeadLetterQueueS3Configuration = { BucketARN = BUCKET_ARN, ExpectedBucketOwner = ACCOUNT },
      },
      LoggingConfiguration = { CloudWatchLogs = { Enabled = false } },
      Tags = { team = "data" },
    }
    assert.is_nil(err)
    local body = sent("CreateChannel")
    assert.same({
      ChannelName = "orders-to-s3", ServiceExecutionRoleARN = ROLE_ARN,
      StreamConfigurationList = { { StreamARN = STREAM_ARN, RecordConfiguration = { RecordFormatType = "JSON" } } },
      S3DestinationConfiguration = {
        DataFreshnessInSeconds = 300,
        StorageConfiguration = { BucketARN = BUCKET_ARN, ExpectedBucketOwner = ACCOUNT, CompressionType = "ZSTD" },
        DeadLetterQueueS3Configuration = { BucketARN = BUCKET_ARN, ExpectedBucketOwner = ACCOUNT },
      },
      LoggingConfiguration = { CloudWatchLogs = { Enabled = false } },
      Tags = { team = "data" },
    }, body)
    local d = out.ChannelDescription
    assert.equal(CHANNEL_ARN, d.ChannelARN)
    assert.equal("CREATING", d.ChannelStatus)
    assert.equal(1795000000.5, d.ChannelCreationTimestamp)
    assert.equal(300, d.S3DestinationConfiguration.DataFreshnessInSeconds)
    if math.type then assert.equal("integer", math.type(d.S3DestinationConfiguration.DataFreshnessInSeconds)) end
    assert.is_false(d.LoggingConfiguration.CloudWatchLogs.Enabled)
    assert.is_nil(d.ChannelStatusReason)
  end)

  it("DescribeChannel", function()
    local active = {}
    for k, v in pairs(description) do active[k] = v end
    active.ChannelStatus = "ACTIVE"
    stub:queue { { status = 200, body = cjson.encode { ChannelDescription = active } } }
    local out = assert(c:describe_channel { ChannelARN = CHANNEL_ARN })
    assert.same({ ChannelARN = CHANNEL_ARN }, (sent("DescribeChannel")))
    assert.equal("ACTIVE", out.ChannelDescription.ChannelStatus)
    assert.equal(STREAM_ARN, out.ChannelDescription.StreamConfigurationList[1].StreamARN)
  end)

  it("ListChannels sends its filter and returns the summaries and the token", function()
    stub:queue { { status = 200, body = cjson.encode {
      NextToken = "tok-2",
      ChannelSummaries = { {
        ChannelName = "orders-to-s3", ChannelARN = CHANNEL_ARN, ChannelId = "ch-0001",
        ChannelStatus = "ACTIVE", ChannelDestinationType = "S3", ChannelCreationTimestamp = 1795000000,
        Streams = { { StreamARN = STREAM_ARN, StreamCreationTimestamp = 1790000000 } },
      } },
    } } }
    local out = assert(c:list_channels { MaxResults = 5, StreamFilter = { { StreamARN = STREAM_ARN } } })
    assert.same({ MaxResults = 5, StreamFilter = { { StreamARN = STREAM_ARN } } }, (sent("ListChannels")))
    assert.equal("tok-2", out.NextToken)
    assert.equal(1, #out.ChannelSummaries)
    assert.equal("S3", out.ChannelSummaries[1].ChannelDestinationType)
    assert.equal(1790000000, out.ChannelSummaries[1].Streams[1].StreamCreationTimestamp)
  end)

  it("UpdateChannel", function()
    stub:queue { { status = 200, body = cjson.encode { ChannelDescription = description } } }
    local out = assert(c:update_channel { ChannelARN = CHANNEL_ARN,
      LoggingConfiguration = { CloudWatchLogs = { Enabled = true, LogGroupName = "/kinesis/channels" } } })
    local _, raw = sent("UpdateChannel")
    -- member order in the body is not part of the contract (the C codec
    -- writes the table's order); the members, types and escaping are
    assert.same({ ChannelARN = CHANNEL_ARN,
                  LoggingConfiguration = { CloudWatchLogs = { Enabled = true, LogGroupName = "/kinesis/channels" } } },
                cjson.decode(raw))
    assert.truthy(raw:find('"Enabled":true', 1, true), raw)
    assert.truthy(raw:find('"LogGroupName":"\\/kinesis\\/channels"', 1, true), raw)
    assert.equal("orders-to-s3", out.ChannelDescription.ChannelName)
  end)

  it("DeleteChannel returns an empty result", function()
    stub:queue { { status = 200, body = "{}" } }
    local out, err = c:delete_channel { ChannelARN = CHANNEL_ARN }
    assert.is_nil(err)
    assert.same({}, out)
    assert.same({ ChannelARN = CHANNEL_ARN }, (sent("DeleteChannel")))
  end)

  it("UpdateStreamRecordDistributionStrategy", function()
    stub:queue { { status = 200, body = "" } }
    local out, err = c:update_stream_record_distribution_strategy {
      StreamARN = STREAM_ARN, RecordDistributionStrategy = "USER_PARTITION_KEY" }
    assert.is_nil(err)
    assert.same({}, out)
    assert.same({ StreamARN = STREAM_ARN, RecordDistributionStrategy = "USER_PARTITION_KEY" },
      (sent("UpdateStreamRecordDistributionStrategy")))
  end)

  it("a modelled error from a Channel operation keeps its code", function()
    stub:queue { { status = 400, headers = { ["x-amzn-RequestId"] = "req-ch-1" },
      body = '{"__type":"com.amazonaws.kinesis#ResourceNotFoundException","message":"Channel not found"}' } }
    local out, err = c:describe_channel { ChannelARN = CHANNEL_ARN }
    assert.is_nil(out)
    assert.equal("aws", err.kind)
    assert.equal("ResourceNotFoundException", err.code)
    assert.equal("Channel not found", err.message)
    assert.equal("req-ch-1", err.request_id)
    assert.equal("DescribeChannel", err.op)
  end)
end)
