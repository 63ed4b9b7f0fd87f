-- Paging: every item exactly once, in order, with as many requests as pages,
-- against kinesis-local (shards, streams, consumers, tags, DescribeStream)
-- and, for the token rules and errors, against the loopback stub.

local peers = require "support.peers"
local cjson = require "cjson"

-- a transport that counts requests per X-Amz-Target
local function counting_transport()
  local inner = require("kinesis.transport.curl").new {}
  local t = { counts = {} }
  function t.send(_, req)
    for _, h in ipairs(req.headers) do
      if h[1] == "X-Amz-Target" then
        local op = h[2]:match("%.(%w+)$")
        t.counts[op] = (t.counts[op] or 0) + 1
      end
    end
    return inner:send(req)
  end
  function t.close() inner:close() end
  return t
end

describe("paging against kinesis-local", function()
  local srv, c, tr
  local arn

  local function wait_active(name)
    local out, err = c:wait("stream_exists", { StreamName = name }, { delay = 0.05, max_attempts = 200 })
    assert(out, tostring(err))
    return out.StreamDescription
  end

  lazy_setup(function()
    srv = peers.start("kinesis-local", { env = { SHARD_LIMIT = "500", CREATE_STREAM_DURATION = "20ms",
      REGISTER_STREAM_CONSUMER_DURATION = "20ms" } })
    tr = counting_transport()
    c = peers.client(srv, { transport = tr })
    assert(c:create_stream { StreamName = "paging-50", ShardCount = 50 })
    arn = wait_active("paging-50").StreamARN
    for i = 1, 29 do
      assert(c:create_stream { StreamName = string.format("paging-s%02d", i), ShardCount = 1 })
    end
  end)
  lazy_teardown(function()
    if c then c:close() end
    if srv then srv.stop() end
  end)
  before_each(function() tr.counts = {} end)

  it("ListShards: 50 shards with MaxResults = 7 in 8 pages, each shard once and in order", function()
    local ids, pages = {}, 0
    for page, err in c:pages("list_shards", { StreamName = "paging-50", MaxResults = 7 }) do
      assert.is_nil(err)
      pages = pages + 1
      assert.is_true(#page.Shards <= 7)
      for _, s in ipairs(page.Shards) do ids[#ids + 1] = s.ShardId end
    end
    assert.equal(8, pages)
    assert.equal(8, tr.counts.ListShards)
    assert.equal(50, #ids)
    for i, id in ipairs(ids) do assert.equal(string.format("shardId-%012d", i - 1), id) end
  end)

  it("items over ListShards yields shard tables", function()
    local n = 0
    for shard, err in c:items("ListShards", { StreamName = "paging-50", MaxResults = 9 }) do
      assert.is_nil(err)
      n = n + 1
      assert.equal(string.format("shardId-%012d", n - 1), shard.ShardId)
    end
    assert.equal(50, n)
    assert.equal(6, tr.counts.ListShards)
  end)

  it("DescribeStream pages by ExclusiveStartShardId while HasMoreShards", function()
    local ids = {}
    for shard, err in c:items("describe_stream", { StreamName = "paging-50", Limit = 7 }) do
      assert.is_nil(err)
      ids[#ids + 1] = shard.ShardId
    end
    assert.equal(50, #ids)
    assert.equal(8, tr.counts.DescribeStream)
    local seen = {}
    for _, id in ipairs(ids) do assert.is_nil(seen[id]) seen[id] = true end
  end)

  it("ListStreams: 30 streams with Limit = 4, each once", function()
    local names, pages = {}, 0
    for page, err in c:pages("list_streams", { Limit = 4 }) do
      assert.is_nil(err)
      pages = pages + 1
      for _, n in ipairs(page.StreamNames) do names[#names + 1] = n end
    end
    assert.equal(30, #names)
    assert.equal(8, pages)
    assert.equal(8, tr.counts.ListStreams)
    local seen = {}
    for _, n in ipairs(names) do assert.is_nil(seen[n]) seen[n] = true end
    assert.is_true(seen["paging-50"] and seen["paging-s29"])
    -- items prefers the summaries when the server sends them
    local n = 0
    for item in c:items("list_streams", { Limit = 4 }) do
      n = n + 1
      assert.is_true(type(item) == "string" or type(item.StreamName) == "string")
    end
    assert.equal(30, n)
  end)

  it("ListStreamConsumers: 12 consumers with MaxResults = 5", function()
    for i = 1, 12 do
      assert(c:register_stream_consumer { StreamARN = arn, ConsumerName = string.format("pc-%02d", i) })
    end
    tr.counts = {}
    local names, pages = {}, 0
    for page, err in c:pages("list_stream_consumers", { StreamARN = arn, MaxResults = 5 }) do
      assert.is_nil(err)
      pages = pages + 1
      assert.is_true(#page.Consumers <= 5)
      for _, consumer in ipairs(page.Consumers) do names[#names + 1] = consumer.ConsumerName end
    end
    assert.equal(12, #names)
    assert.is_true(pages >= 3)
    assert.equal(pages, tr.counts.ListStreamConsumers)
    table.sort(names)
    for i = 1, 12 do assert.equal(string.format("pc-%02d", i), names[i]) end
  end)

  it("ListTagsForStream pages by ExclusiveStartTagKey while HasMoreTags", function()
    local tags = {}
    for i = 1, 10 do tags[string.format("t%02d", i)] = "v" .. i end
    assert(c:add_tags_to_stream { StreamName = "paging-50", Tags = tags })
    tr.counts = {}
    local keys = {}
    for tag, err in c:items("list_tags_for_stream", { StreamName = "paging-50", Limit = 3 }) do
      assert.is_nil(err)
      keys[#keys + 1] = tag.Key
      assert.equal(tags[tag.Key], tag.Value)
    end
    assert.equal(10, #keys)
    assert.equal(4, tr.counts.ListTagsForStream)
    for i = 1, 10 do assert.equal(string.format("t%02d", i), keys[i]) end
  end)

  it("an error ends the iteration after yielding false, err once", function()
    local calls, got = 0, {}
    for page, err in c:pages("list_shards", { StreamName = "no-such-stream" }) do
      calls = calls + 1
      got[#got + 1] = { page = page, err = err }
    end
    assert.equal(1, calls)
    assert.is_false(got[1].page)
    assert.equal("ResourceNotFoundException", got[1].err.code)
  end)

  it("refuses an operation that is not paginated", function()
    assert.has_error(function() c:pages("put_record", {}) end)
  end)
end)

describe("paging rules against the stub", function()
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

  local function shard(i)
    return { ShardId = "shardId-" .. i, HashKeyRange = { StartingHashKey = "0", EndingHashKey = "1" },
      SequenceNumberRange = { StartingSequenceNumber = "1" } }
  end

  it("ListShards sends NextToken without StreamName, StreamARN or the creation timestamp", function()
    stub:queue {
      { status = 200, body = cjson.encode { Shards = { shard(1) }, NextToken = "tok-1" } },
      { status = 200, body = cjson.encode { Shards = { shard(2) }, NextToken = cjson.null } },
    }
    local ids = {}
    for s in c:items("list_shards", { StreamName = "s", StreamCreationTimestamp = 1700000000, MaxResults = 1 }) do
      ids[#ids + 1] = s.ShardId
    end
    assert.same({ "shardId-1", "shardId-2" }, ids)
    local reqs = stub:requests()
    assert.equal(2, #reqs)
    assert.same({ StreamName = "s", StreamCreationTimestamp = 1700000000, MaxResults = 1 }, cjson.decode(reqs[1].body))
    assert.same({ NextToken = "tok-1", MaxResults = 1 }, cjson.decode(reqs[2].body))
  end)

  it("ListStreamConsumers keeps StreamARN and drops the creation timestamp with NextToken", function()
    local sarn = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
    stub:queue {
      { status = 200, body = cjson.encode { Consumers = { { ConsumerName = "a" } }, NextToken = "t2" } },
      { status = 200, body = cjson.encode { Consumers = { { ConsumerName = "b" } } } },
    }
    local n = 0
    for _ in c:items("list_stream_consumers", { StreamARN = sarn, StreamCreationTimestamp = 1700000000 }) do n = n + 1 end
    assert.equal(2, n)
    assert.same({ StreamARN = sarn, NextToken = "t2" }, cjson.decode(stub:requests()[2].body))
  end)

  it("ListChannels pages with NextToken", function()
    local summary = { ChannelName = "c", ChannelARN = "arn:aws:kinesis:us-east-1:123456789012:channel/c",
      ChannelId = "1", ChannelStatus = "ACTIVE", ChannelDestinationType = "S3",
      ChannelCreationTimestamp = 1, Streams = {} }
    stub:queue {
      { status = 200, body = cjson.encode { ChannelSummaries = { summary }, NextToken = "n1" } },
      { status = 200, body = cjson.encode { ChannelSummaries = { summary, summary } } },
    }
    local n = 0
    for item in c:items("list_channels", { MaxResults = 1 }) do
      n = n + 1
      assert.equal("c", item.ChannelName)
    end
    assert.equal(3, n)
    assert.same({ MaxResults = 1, NextToken = "n1" }, cjson.decode(stub:requests()[2].body))
  end)

  it("continues ListStreams after the last name when HasMoreStreams comes without NextToken", function()
    stub:queue {
      { status = 200, body = cjson.encode { StreamNames = { "a", "b" }, HasMoreStreams = true } },
      { status = 200, body = cjson.encode { StreamNames = { "c" }, HasMoreStreams = false } },
    }
    local names = {}
    for name in c:items("list_streams", { Limit = 2 }) do names[#names + 1] = name end
    assert.same({ "a", "b", "c" }, names)
    assert.same({ Limit = 2, ExclusiveStartStreamName = "b" }, cjson.decode(stub:requests()[2].body))
  end)

  -- regression: fuzz/corpus/response/regress-liststreams-endless-paging
  it("ends ListStreams paging when a server repeats HasMoreStreams without progress", function()
    local page = { status = 200, body = cjson.encode { StreamNames = { "a" }, HasMoreStreams = true } }
    stub:queue { page, page, page, page }
    local got = {}
    for p, err in c:pages("list_streams", {}) do got[#got + 1] = { p, err } end
    assert.equal(3, #got)
    assert.is_false(got[3][1])
    assert.equal("RepeatedPaginationToken", got[3][2].code)
    assert.equal(2, #stub:requests())
  end)

  it("reports ExpiredNextTokenException as such, without retrying", function()
    stub:queue {
      { status = 200, body = cjson.encode { Shards = { shard(1) }, NextToken = "old" } },
      { status = 400, body = '{"__type":"ExpiredNextTokenException","message":"The token expired"}' },
    }
    local got = {}
    for page, err in c:pages("list_shards", { StreamName = "s" }) do got[#got + 1] = { page, err } end
    assert.equal(2, #got)
    assert.is_false(got[2][1])
    assert.equal("ExpiredNextTokenException", got[2][2].code)
    assert.equal(2, #stub:requests())
  end)

  it("reports a server that repeats its token instead of looping forever", function()
    stub:queue {
      { status = 200, body = cjson.encode { Shards = { shard(1) }, NextToken = "same" } },
      { status = 200, body = cjson.encode { Shards = { shard(2) }, NextToken = "same" } },
      { status = 200, body = cjson.encode { Shards = { shard(3) }, NextToken = "same" } },
    }
    local got = {}
    for page, err in c:pages("list_shards", { StreamName = "s" }) do got[#got + 1] = { page, err } end
    assert.equal(3, #got)
    assert.equal("shardId-2", got[2][1].Shards[1].ShardId)
    assert.is_false(got[3][1])
    assert.equal("protocol", got[3][2].kind)
    assert.equal("RepeatedPaginationToken", got[3][2].code)
    assert.equal(2, #stub:requests())
  end)
end)
