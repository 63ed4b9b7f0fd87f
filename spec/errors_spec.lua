-- Error mapping: AWS error responses in their several spellings, non-JSON
-- error bodies, bad success bodies (protocol errors), refused connections
-- and timeouts, all as the one error table.

local peers = require "support.peers"
local errors = require "kinesis.errors"

describe("error mapping", function()
  local stub, c

  lazy_setup(function()
    stub = peers.start("stub")
    -- retries off: each case sees exactly the one response it queued
    c = peers.client(stub, { timeout = { connect = 2, request = 1 }, retry = { mode = "off" } })
  end)
  lazy_teardown(function()
    if c then c:close() end
    if stub then stub.stop() end
  end)
  before_each(function() stub:reset() end)

  local function call_with(resp)
    stub:queue { resp }
    return c:describe_stream_summary { StreamName = "s" }
  end

  it("takes the code from X-Amzn-ErrorType, cut at the colon", function()
    local out, err = call_with { status = 400, headers = {
      ["X-Amzn-ErrorType"] = "ResourceNotFoundException:http://internal.amazon.com/coral/com.amazonaws.kinesis.v20131202/",
      ["x-amzn-RequestId"] = "rid-1" },
      body = '{"message":"Stream s under account 1 not found."}' }
    assert.is_nil(out)
    assert.equal("aws", err.kind)
    assert.equal("ResourceNotFoundException", err.code)
    assert.equal("Stream s under account 1 not found.", err.message)
    assert.equal(400, err.status)
    assert.equal("rid-1", err.request_id)
    assert.equal("DescribeStreamSummary", err.op)
    assert.is_false(err.retryable)
    assert.is_true(errors.is_error(err))
  end)

  it("takes the code from __type after '#', and Message with a capital M", function()
    local _, err = call_with { status = 400,
      body = '{"__type":"com.amazonaws.kinesis.v20131202#LimitExceededException","Message":"Rate exceeded"}' }
    assert.equal("LimitExceededException", err.code)
    assert.equal("Rate exceeded", err.message)
    assert.is_true(err.retryable)
  end)

  it("marks throttling as retryable", function()
    local _, err = call_with { status = 400,
      body = '{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for shard"}' }
    assert.equal("ProvisionedThroughputExceededException", err.code)
    assert.is_true(err.retryable)
    assert.is_true(err.throttling)
  end)

  it("gives a useful error for a non-JSON error body", function()
    local _, err = call_with { status = 502, headers = { ["Content-Type"] = "text/html" },
      body = "<html><body><h1>502 Bad Gateway</h1></body></html>" }
    assert.equal("aws", err.kind)
    assert.equal("BadGateway", err.code)
    assert.equal(502, err.status)
    assert.truthy(err.message:find("502 Bad Gateway", 1, true))
    assert.is_true(err.retryable)
  end)

  it("gives a useful error for an empty 503", function()
    local _, err = call_with { status = 503, body = "" }
    assert.equal("ServiceUnavailable", err.code)
    assert.is_true(err.retryable)
  end)

  it("reports a success body that is not JSON as a protocol error", function()
    local out, err = call_with { status = 200, body = "this is not json" }
    assert.is_nil(out)
    assert.equal("protocol", err.kind)
    assert.equal(200, err.status)
  end)

  it("reports a blob that is not base64 as a protocol error", function()
    stub:queue { { status = 200, body = '{"Records":[{"Data":"!!not base64!!","PartitionKey":"k","SequenceNumber":"1"}],"MillisBehindLatest":0}' } }
    local out, err = c:get_records { ShardIterator = "it" }
    assert.is_nil(out)
    assert.equal("protocol", err.kind)
    assert.truthy(err.message:find("Data", 1, true))
  end)

  it("reports a response of the wrong shape as a protocol error, not a crash", function()
    local out, err = call_with { status = 200, body = '{"StreamDescriptionSummary":"oops"}' }
    assert.is_nil(out)
    assert.equal("protocol", err.kind)
  end)

  it("maps a refused connection to a transport error", function()
    -- a port nothing listens on: the port of a stub that has been stopped
    local gone = peers.start("stub")
    gone.stop()
    local c2 = peers.client(gone, { retry = { mode = "off" } })
    local out, err = c2:list_streams {}
    assert.is_nil(out)
    assert.equal("transport", err.kind)
    assert.equal("ConnectionRefused", err.code)
    assert.is_true(err.retryable)
    assert.equal("ListStreams", err.op)
    assert.truthy(#err.message > 0)
    c2:close()
  end)

  it("maps a stalled response to a Timeout transport error within the request timeout", function()
    stub:queue { { action = "stall" } }
    local t0 = os.time()
    local out, err = c:describe_stream_summary { StreamName = "s" }
    assert.is_nil(out)
    assert.equal("transport", err.kind)
    assert.equal("Timeout", err.code)
    assert.is_true(os.time() - t0 <= 5)
  end)

  it("formats errors for humans with tostring", function()
    local _, err = call_with { status = 400, headers = { ["x-amzn-RequestId"] = "rid-9" },
      body = '{"__type":"InvalidArgumentException","message":"bad thing"}' }
    assert.equal("DescribeStreamSummary: aws error InvalidArgumentException (HTTP 400): bad thing [request id rid-9]",
      tostring(err))
  end)
end)
