-- faults_spec.lua - the client against a real server (kinesis-local) behind
-- spec/support/faultproxy.js, which breaks exchanges on purpose: resets
-- before and in the middle of a response, stalls, 500/503/throttle answers,
-- truncated bodies, invalid JSON, wrong Content-Length, bytes that are not
-- HTTP. For each: the error kind and code, whether it is retryable and is
-- retried, an answer within the configured timeouts, and a client that
-- keeps working afterwards. Both the blocking path (curl easy handle) and
-- the kinesis.run path (curl multi handle) are covered.
local peers = require "support.peers"
local faultproxy = require "support.faultproxy"
local kinesis = require "kinesis"
local core = require "kinesis.core"

local monotime = core.monotime

-- timeouts small enough to keep the spec quick, large enough for a loaded
-- machine (and ASan) to answer a healthy request well within them
local CONNECT, REQUEST = 3, 2
local SLACK = 2     -- scheduling on a busy machine (ASan beside valgrind)

-- What each fault must turn into (retry off, first request of a client).
local EXPECT = {
  reset_before = { kind = "transport", code = "ConnectionReset", retryable = true },
  reset_mid    = { kind = "transport", code = "ConnectionReset", retryable = true },
  stall        = { kind = "transport", code = "Timeout", retryable = true, slow = true },
  stall_mid    = { kind = "transport", code = "Timeout", retryable = true, slow = true },
  http500      = { kind = "aws", code = "InternalFailure", status = 500, retryable = true },
  http503      = { kind = "aws", code = "ServiceUnavailable", status = 503, retryable = true },
  throttle     = { kind = "aws", code = "ProvisionedThroughputExceededException", status = 400,
                   retryable = true, throttling = true },
  truncate     = { kind = "transport", code = "ConnectionReset", retryable = true },
  long_length  = { kind = "transport", code = "ConnectionReset", retryable = true },
  invalid_json = { kind = "protocol", code = "ProtocolError", status = 200, retryable = false },
  short_length = { kind = "protocol", code = "ProtocolError", status = 200, retryable = false },
  garbage      = { kind = "transport", code = "Transport", retryable = true },
}
local ORDER = { "reset_before", "reset_mid", "stall", "stall_mid", "http500", "http503",
  "throttle", "truncate", "long_length", "invalid_json", "short_length", "garbage" }

describe("faults between the client and kinesis-local", function()
  local srv, proxy

  lazy_setup(function()
    srv = peers.start("kinesis-local", { env = { CREATE_STREAM_DURATION = "20ms" } })
    proxy = faultproxy.start { upstream = srv.endpoint }
  end)

  lazy_teardown(function()
    if proxy then proxy:stop() end
    if srv then srv.stop() end
  end)

  before_each(function()
    proxy:reset()
  end)

  local function new_client(retry, timeout)
    local c = assert(kinesis.new {
      endpoint = proxy.endpoint, region = peers.region, credentials = peers.credentials,
      retry = retry or { mode = "off" },
      timeout = timeout or { connect = CONNECT, request = REQUEST },
    })
    return c
  end

  local function check_error(fault, err, elapsed)
    local want = EXPECT[fault]
    assert.is_table(err, fault .. ": no error")
    assert.equal(want.kind, err.kind, fault .. ": " .. tostring(err))
    assert.equal(want.code, err.code, fault .. ": " .. tostring(err))
    assert.equal(want.retryable, err.retryable, fault .. ": retryable")
    assert.equal("ListStreams", err.op)
    if want.status then assert.equal(want.status, err.status, fault) end
    if want.throttling then assert.is_true(err.throttling, fault) end
    assert.is_string(tostring(err))
    -- an answer within the configured timeouts, whatever the fault
    assert.is_true(elapsed < REQUEST + SLACK,
      ("%s: answered after %.2f s (request timeout %g s)"):format(fault, elapsed, REQUEST))
    if want.slow then
      assert.is_true(elapsed >= REQUEST - 0.1,
        ("%s: a stall must last the request timeout, not %.2f s"):format(fault, elapsed))
    end
  end

  for _, fault in ipairs(ORDER) do
    it(fault .. ": the right error, once, within the timeout; the client works afterwards", function()
      local c = new_client()
      proxy:script { { kind = fault } }
      local t0 = monotime()
      local out, err, meta = c:list_streams {}
      local elapsed = monotime() - t0
      assert.is_nil(out, fault .. " gave a result")
      check_error(fault, err, elapsed)
      assert.equal(1, meta.attempts)
      local stats = proxy:stats()
      assert.equal(1, stats.requests, fault .. ": retry mode off sends once")
      -- the next call goes through, short_length included: the bytes left
      -- unread on a kept-alive connection must not become the next answer
      local out2, err2 = c:list_streams {}
      assert.is_table(out2, fault .. ": the next call failed: " .. tostring(err2))
      assert.is_table(out2.StreamNames)
      c:close()
    end)
  end

  for _, fault in ipairs(ORDER) do
    local want = EXPECT[fault]
    local what = want.retryable and "is retried and the call succeeds"
      or "is not retried: the error comes back after one attempt"
    it(fault .. " " .. what .. " (standard retries)", function()
      local c = new_client({ mode = "standard", max_attempts = 3, base = 0.01 })
      proxy:script { { kind = fault } }
      local t0 = monotime()
      local out, err, meta = c:list_streams {}
      local elapsed = monotime() - t0
      local stats = proxy:stats()
      if want.retryable then
        assert.is_table(out, fault .. ": " .. tostring(err))
        assert.equal(2, meta.attempts, fault)
        assert.equal(2, stats.requests, fault)
        assert.is_true(elapsed < (want.slow and REQUEST or 0) + SLACK,
          ("%s: %.2f s for one fault and one retry"):format(fault, elapsed))
      else
        assert.is_nil(out)
        check_error(fault, err, elapsed)
        assert.equal(1, meta.attempts)
        assert.equal(1, stats.requests)
        -- the connection the bad answer came on is not reused to harm:
        -- with retries, the next call succeeds
        local out2, err2 = c:list_streams {}
        assert.is_table(out2, fault .. ": the next call failed: " .. tostring(err2))
      end
      c:close()
    end)
  end

  it("inside kinesis.run (curl multi) every fault gives the same error as outside, and the next call works", function()
    local results = kinesis.run(function()
      local r = {}
      for _, fault in ipairs(ORDER) do
        local c = new_client()
        proxy:script { { kind = fault } }
        local t0 = monotime()
        local out, err = c:list_streams {}
        local elapsed = monotime() - t0
        -- the same client again: the run's multi pools the connections, so a
        -- poisoned one would be handed to this call (or any other)
        local out2, err2 = c:list_streams {}
        r[#r + 1] = { fault = fault, out = out, err = err, elapsed = elapsed, out2 = out2, err2 = err2 }
        c:close()
      end
      return r
    end)
    assert.equal(#ORDER, #results)
    for _, r in ipairs(results) do
      assert.is_nil(r.out, r.fault)
      check_error(r.fault, r.err, r.elapsed)
      assert.is_table(r.out2, r.fault .. ": the next call failed: " .. tostring(r.err2))
    end
  end)

  it("short_length on a connection shared with another client's calls in kinesis.run: neither gets the leftover bytes", function()
    -- two clients, one run: their requests share the multi's connection pool
    local a, b = new_client(), new_client()
    local r = kinesis.run(function()
      assert.is_table((a:list_streams {}))
      proxy:script { { kind = "short_length" } }
      local out, err = a:list_streams {}
      local outs = {}
      for i = 1, 3 do
        local o, e = b:list_streams {}
        outs[i] = { o, e }
      end
      return { out = out, err = err, outs = outs }
    end)
    assert.is_nil(r.out)
    assert.equal("ProtocolError", r.err.code)
    for i = 1, 3 do
      assert.is_table(r.outs[i][1], "call " .. i .. " of the other client: " .. tostring(r.outs[i][2]))
    end
    a:close()
    b:close()
  end)

  it("faults on many tasks at once in kinesis.run: each call succeeds after a retry or fails cleanly", function()
    local kinds = { "reset_mid", "http500", "http503", "throttle", "truncate", "invalid_json", "garbage", "stall" }
    local script = {}
    for i = 1, 24 do script[i] = { kind = kinds[(i - 1) % #kinds + 1] } end
    proxy:script(script)
    local c = new_client({ mode = "standard", max_attempts = 4, base = 0.01 })
    local t0 = monotime()
    local outcomes = kinesis.run(function()
      local tasks = {}
      for i = 1, 24 do
        tasks[i] = kinesis.spawn(function()
          local out, err = c:list_streams {}
          return out ~= nil, err
        end)
      end
      return kinesis.wait_all(tasks)
    end)
    local elapsed = monotime() - t0
    local ok, clean = 0, 0
    for _, o in ipairs(outcomes) do
      assert.is_true(o[1], "a task raised: " .. tostring(o[2]))
      if o[2] then
        ok = ok + 1
      else
        local err = o[3]
        assert.is_table(err)
        -- only a fault that is not retryable may end a call
        assert.equal("protocol", err.kind, tostring(err))
        assert.is_false(err.retryable)
        clean = clean + 1
      end
    end
    assert.equal(24, ok + clean)
    -- 3 invalid_json faults are not retryable; everything else recovered
    assert.equal(3, clean)
    -- all in parallel: about one request timeout (the stalls), not 24 of them
    assert.is_true(elapsed < 3 * REQUEST + SLACK, ("took %.2f s"):format(elapsed))
    c:close()
  end)

  -- A Content-Length shorter than the bytes sent leaves the rest on a
  -- kept-alive connection; reused, it would be read as the next answer
  -- ("Received HTTP/0.9"). Bytes already there when the answer completes are
  -- seen by the transport; bytes that come later are dropped with the
  -- connection because the answer could not be decoded.
  for _, late in ipairs { false, true } do
    local kind = late and "short_length_late" or "short_length"
    it(kind .. " on a kept-alive connection (blocking): the next calls succeed on a new connection", function()
      local c = new_client()
      assert.is_table((c:list_streams {}))
      assert.equal(1, c:transport():stats().connects)
      proxy:script { { kind = kind } }
      local out, err = c:list_streams {}
      assert.is_nil(out)
      assert.equal("ProtocolError", err.code, tostring(err))
      if late then os.execute("sleep 0.3") end    -- the leftover is in by now
      for i = 1, 3 do
        local o, e = c:list_streams {}
        assert.is_table(o, kind .. ": call " .. i .. " after the fault: " .. tostring(e))
      end
      -- one new connection, kept alive again afterwards
      assert.equal(2, c:transport():stats().connects)
      c:close()
    end)

    it(kind .. " on a kept-alive connection (kinesis.run): the next calls succeed", function()
      local c = new_client()
      local r = kinesis.run(function()
        assert.is_table((c:list_streams {}))
        proxy:script { { kind = kind } }
        local out, err = c:list_streams {}
        if late then kinesis.sleep(0.3) end
        local outs = {}
        for i = 1, 3 do outs[i] = { c:list_streams {} } end
        return { out = out, err = err, outs = outs }
      end)
      assert.is_nil(r.out)
      assert.equal("ProtocolError", r.err.code, tostring(r.err))
      for i = 1, 3 do
        assert.is_table(r.outs[i][1], kind .. ": call " .. i .. " after the fault: " .. tostring(r.outs[i][2]))
      end
      c:close()
    end)
  end

  it("a reset before any answer on a reused connection: curl sends the request again by itself", function()
    -- libcurl retries a request whose reused connection died before the
    -- first response byte (it takes it for a keep-alive close race). That
    -- resend happens below the retry policy, even with retries off.
    local c = new_client()
    assert.is_table((c:list_streams {}))
    proxy:reset()
    proxy:script { { kind = "reset_before" } }
    local out, err, meta = c:list_streams {}
    assert.is_table(out, tostring(err))
    assert.equal(1, meta.attempts)
    assert.equal(2, proxy:stats().requests)
    c:close()
  end)

  it("a stall with retries stays within attempts x request timeout, and timeout.total caps it", function()
    local c = new_client({ mode = "standard", max_attempts = 3, base = 0.01 })
    proxy:script { { kind = "stall" }, { kind = "stall" }, { kind = "stall" } }
    local t0 = monotime()
    local out, err, meta = c:list_streams {}
    local elapsed = monotime() - t0
    assert.is_nil(out)
    assert.equal("Timeout", err.code)
    assert.equal(3, meta.attempts)
    assert.is_true(elapsed >= 3 * REQUEST - 0.3 and elapsed < 3 * REQUEST + SLACK,
      ("3 stalled attempts took %.2f s"):format(elapsed))
    c:close()

    proxy:reset()
    local total = REQUEST * 1.5
    c = new_client({ mode = "standard", max_attempts = 5, base = 0.01 },
      { connect = CONNECT, request = REQUEST, total = total })
    proxy:script { { kind = "stall" }, { kind = "stall" }, { kind = "stall" } }
    t0 = monotime()
    out, err = c:list_streams {}
    elapsed = monotime() - t0
    assert.is_nil(out)
    assert.equal("transport", err.kind)
    assert.is_true(elapsed < total + SLACK, ("total %g s, took %.2f s"):format(total, elapsed))
    assert.is_true(proxy:stats().requests <= 2)
    c:close()
  end)

  it("a throttled PutRecord is retried with backoff and its record is stored", function()
    local direct = assert(kinesis.new { endpoint = srv.endpoint, region = peers.region,
      credentials = peers.credentials })
    assert(direct:create_stream { StreamName = "faults-put", ShardCount = 1 })
    assert(direct:wait("stream_exists", { StreamName = "faults-put" }, { delay = 0.05, max_attempts = 100 }))
    local c = new_client({ mode = "standard", max_attempts = 4, base = 0.01 })
    proxy:script { { kind = "throttle" }, { kind = "http503" } }
    local out, err, meta = c:put_record { StreamName = "faults-put", PartitionKey = "k", Data = "\0payload\255" }
    assert.is_table(out, tostring(err))
    assert.equal(3, meta.attempts)
    assert.equal("shardId-000000000000", out.ShardId)
    local it = assert(direct:get_shard_iterator { StreamName = "faults-put",
      ShardId = out.ShardId, ShardIteratorType = "TRIM_HORIZON" })
    local got = assert(direct:get_records { ShardIterator = it.ShardIterator })
    assert.equal(1, #got.Records)
    assert.equal("\0payload\255", got.Records[1].Data)
    c:close()
    direct:close()
  end)
end)
