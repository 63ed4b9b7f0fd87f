-- A second, stricter server: a representative set of operations against
-- kinesalite, and its validation and not-found errors mapped to the right code.

local peers = require "support.peers"
local sleep = require("socket").sleep

describe("against kinesalite", function()
  local srv, c
  local S = "lite-stream"

  local function wait_active(name)
    for _ = 1, 200 do
      local d = assert(c:describe_stream { StreamName = name }).StreamDescription
      if d.StreamStatus == "ACTIVE" then return d end
      sleep(0.05)
    end
    error("never ACTIVE")
  end

  lazy_setup(function()
    srv = peers.start("kinesalite", { args = { "--createStreamMs", "50", "--deleteStreamMs", "50", "--updateStreamMs", "50" } })
    c = peers.client(srv)
    assert(c:create_stream { StreamName = S, ShardCount = 2 })
    wait_active(S)
  end)
  lazy_teardown(function()
    if c then c:close() end
    if srv then srv.stop() end
  end)

  it("describes the stream with power-of-two shard boundaries", function()
    local d = wait_active(S)
    assert.equal(2, #d.Shards)
    assert.equal("170141183460469231731687303715884105727", d.Shards[1].HashKeyRange.EndingHashKey)
    assert.equal("170141183460469231731687303715884105728", d.Shards[2].HashKeyRange.StartingHashKey)
    assert.equal(24, d.RetentionPeriodHours)
  end)

  it("puts and gets records", function()
    local a = assert(c:put_record { StreamName = S, PartitionKey = "a", Data = "one\0" })
    local b = assert(c:put_records { StreamName = S, Records = { { PartitionKey = "a", Data = "two\255" } } })
    assert.equal(0, b.FailedRecordCount)
    assert.equal(a.ShardId, b.Records[1].ShardId)
    local it = assert(c:get_shard_iterator { StreamName = S, ShardId = a.ShardId, ShardIteratorType = "TRIM_HORIZON" })
    local out = assert(c:get_records { ShardIterator = it.ShardIterator })
    assert.equal(2, #out.Records)
    assert.equal("one\0", out.Records[1].Data)
    assert.equal("two\255", out.Records[2].Data)
    assert.equal(0, out.MillisBehindLatest)
  end)

  it("lists shards and tags", function()
    assert.equal(2, #assert(c:list_shards { StreamName = S }).Shards)
    assert(c:add_tags_to_stream { StreamName = S, Tags = { a = "1" } })
    local tags = assert(c:list_tags_for_stream { StreamName = S }).Tags
    assert.same({ { Key = "a", Value = "1" } }, tags)
  end)

  local function expect(code, out, err)
    assert.is_nil(out)
    assert.equal("aws", err.kind)
    assert.equal(code, err.code)
    assert.equal(400, err.status)
    assert.truthy(#err.message > 0)
    return err
  end

  it("maps ResourceInUseException (stream exists)", function()
    local err = expect("ResourceInUseException", c:create_stream { StreamName = S, ShardCount = 1 })
    assert.truthy(err.message:find("already exists", 1, true))
  end)

  it("maps LimitExceededException (shard limit) as retryable", function()
    local err = expect("LimitExceededException", c:create_stream { StreamName = "too-big", ShardCount = 50 })
    assert.is_true(err.retryable)
  end)

  it("maps ResourceNotFoundException for a stream and for a shard", function()
    expect("ResourceNotFoundException", c:describe_stream { StreamName = "missing" })
    expect("ResourceNotFoundException", c:get_shard_iterator { StreamName = S,
      ShardId = "shardId-000000000099", ShardIteratorType = "LATEST" })
  end)

  it("maps the server's ValidationException", function()
    local err = expect("ValidationException", c:increase_stream_retention_period { StreamName = S, RetentionPeriodHours = 100000 })
    assert.truthy(err.message:find("168", 1, true))
    assert.is_false(err.retryable)
  end)

  it("maps InvalidArgumentException", function()
    expect("InvalidArgumentException", c:decrease_stream_retention_period { StreamName = S, RetentionPeriodHours = 1 })
    expect("InvalidArgumentException", c:get_records { ShardIterator = "AAAAAAAAAAGoodlooking" })
  end)

  it("deletes the stream", function()
    assert(c:delete_stream { StreamName = S })
    for _ = 1, 100 do
      local out, err = c:describe_stream { StreamName = S }
      if not out then assert.equal("ResourceNotFoundException", err.code) return end
      sleep(0.05)
    end
    error("stream was not deleted")
  end)
end)
