-- Waiters against kinesis-local with slow state changes: stream_exists,
-- stream_not_exists, consumer_active, consumer_not_exists; giving up, and
-- stopping at once on an error no acceptor expects. Plus the backoff curve.

local peers = require "support.peers"
local waiters = require "kinesis.waiters"

describe("waiters against kinesis-local", function()
  local srv, c

  lazy_setup(function()
    srv = peers.start("kinesis-local", { env = {
      CREATE_STREAM_DURATION = "2s", DELETE_STREAM_DURATION = "2s",
      REGISTER_STREAM_CONSUMER_DURATION = "2s", DEREGISTER_STREAM_CONSUMER_DURATION = "2s",
    } })
    c = peers.client(srv)
  end)
  lazy_teardown(function()
    if c then c:close() end
    if srv then srv.stop() end
  end)

  it("stream_exists waits through CREATING and returns the last response", function()
    assert(c:create_stream { StreamName = "w-1", ShardCount = 1 })
    local status = assert(c:describe_stream { StreamName = "w-1" }).StreamDescription.StreamStatus
    assert.equal("CREATING", status)
    local out, err, attempts = c:wait("stream_exists", { StreamName = "w-1" }, { delay = 0.25, max_delay = 0.5, max_attempts = 40 })
    assert.is_nil(err)
    assert.equal("ACTIVE", out.StreamDescription.StreamStatus)
    assert.is_true(attempts > 1)
  end)

  it("gives up with WaiterTimeout when max_attempts runs out", function()
    assert(c:create_stream { StreamName = "w-2", ShardCount = 1 })
    local out, err = c:wait("stream_exists", { StreamName = "w-2" }, { delay = 0.1, max_attempts = 2 })
    assert.is_nil(out)
    assert.equal("waiter", err.kind)
    assert.equal("WaiterTimeout", err.code)
    assert.equal(2, err.attempts)
  end)

  it("gives up with WaiterTimeout when the total timeout runs out", function()
    assert(c:create_stream { StreamName = "w-3", ShardCount = 1 })
    local out, err = c:wait("stream_exists", { StreamName = "w-3" }, { delay = 0.1, timeout = 0.5 })
    assert.is_nil(out)
    assert.equal("WaiterTimeout", err.code)
  end)

  it("stops at once on an error no acceptor expects", function()
    local inner = require("kinesis.transport.curl").new {}
    local sent = 0
    local counting = { send = function(_, req) sent = sent + 1 return inner:send(req) end }
    local c2 = peers.client(srv, { transport = counting })
    local out, err = c2:wait("stream_exists", { StreamName = "never-created" }, { delay = 0.1, max_attempts = 50 })
    assert.is_nil(out)
    assert.equal("ResourceNotFoundException", err.code)
    assert.equal("aws", err.kind)
    assert.equal(1, sent)
    inner:close()
  end)

  it("stream_not_exists waits through DELETING", function()
    assert(c:wait("stream_exists", { StreamName = "w-1" }, { delay = 0.2, max_attempts = 40 }))
    assert(c:delete_stream { StreamName = "w-1" })
    local out, err, attempts = c:wait("stream_not_exists", { StreamName = "w-1" }, { delay = 0.25, max_delay = 0.5, max_attempts = 40 })
    assert.is_nil(err)
    assert.is_table(out)
    assert.is_true(attempts > 1)
    local _, gone = c:describe_stream { StreamName = "w-1" }
    assert.equal("ResourceNotFoundException", gone.code)
  end)

  it("consumer_active after RegisterStreamConsumer, consumer_not_exists after deregistering", function()
    assert(c:create_stream { StreamName = "w-c", ShardCount = 1 })
    local d = assert(c:wait("stream_exists", { StreamName = "w-c" }, { delay = 0.2, max_attempts = 40 })).StreamDescription
    local reg = assert(c:register_stream_consumer { StreamARN = d.StreamARN, ConsumerName = "w-consumer" })
    local out, err, attempts = c:wait("consumer_active", { ConsumerARN = reg.Consumer.ConsumerARN },
      { delay = 0.25, max_delay = 0.5, max_attempts = 40 })
    assert.is_nil(err)
    assert.equal("ACTIVE", out.ConsumerDescription.ConsumerStatus)
    assert.is_true(attempts > 1)
    assert(c:deregister_stream_consumer { ConsumerARN = reg.Consumer.ConsumerARN })
    out, err = c:wait("consumer_not_exists", { ConsumerARN = reg.Consumer.ConsumerARN },
      { delay = 0.25, max_delay = 0.5, max_attempts = 40 })
    assert.is_nil(err)
  end)

  it("raises for an unknown waiter name", function()
    assert.has_error(function() c:wait("stream_is_happy", { StreamName = "x" }) end)
  end)
end)

describe("waiter backoff", function()
  it("stays between min_delay and the exponential cap, and reaches max_delay", function()
    math.randomseed(7)
    for attempt = 1, 12 do
      local cap = math.min(2 * 2 ^ (attempt - 1), 120)
      for _ = 1, 50 do
        local d = waiters.delay(attempt, 2, 120)
        assert.is_true(d >= 2 and d <= cap, ("attempt %d delay %f cap %f"):format(attempt, d, cap))
      end
    end
    local hi = 0
    for _ = 1, 200 do hi = math.max(hi, waiters.delay(20, 2, 120)) end
    assert.is_true(hi > 100)
  end)

  it("takes stream_exists and channel_active from the model", function()
    assert.equal("DescribeStream", waiters.WAITERS.stream_exists.operation)
    assert.equal(10, waiters.WAITERS.stream_exists.min_delay)
    assert.equal(18, waiters.WAITERS.stream_exists.max_attempts)
    assert.equal("DescribeChannel", waiters.WAITERS.channel_active.operation)
    assert.equal(5, #waiters.WAITERS.channel_active.acceptors)
  end)
end)
