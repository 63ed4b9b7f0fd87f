-- Retries against a loopback server that fails the first N attempts (throttle,
-- 500, 503, reset connection, stall past the timeout) and then succeeds; the
-- give-up behaviour, errors that are never retried, the retry quota, the
-- adaptive limiter and clock-skew correction.

local kinesis = require "kinesis"
local peers = require "support.peers"
local retry = require "kinesis.retry"
local client_mod = require "kinesis.client"

local OK = '{"StreamDescriptionSummary":{"StreamName":"s","StreamStatus":"ACTIVE","OpenShardCount":1}}'
local THROTTLE = { status = 400, body = '{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded"}' }

describe("retries", function()
  local stub

  lazy_setup(function() stub = peers.start("stub") end)
  lazy_teardown(function() if stub then stub.stop() end end)
  before_each(function() stub:reset() end)

  local function client(retry_cfg, timeout)
    return peers.client(stub, { retry = retry_cfg, timeout = timeout or { request = 1 } })
  end

  local failures = {
    { "a throttle", THROTTLE, "ProvisionedThroughputExceededException" },
    { "a 500", { status = 500, body = '{"__type":"InternalFailure","message":"oops"}' }, "InternalFailure" },
    { "a 503 without a body", { status = 503, body = "" }, "ServiceUnavailable" },
    { "a reset connection", { action = "reset" }, "ConnectionReset" },
    { "a stall past the request timeout", { action = "stall" }, "Timeout" },
  }

  for _, f in ipairs(failures) do
    local what, resp, code = f[1], f[2], f[3]

    it("succeeds on the third attempt after two of " .. what, function()
      stub:queue { resp, resp, { status = 200, body = OK } }
      local c = client { mode = "standard", max_attempts = 3, base = 0.01 }
      local out, err, meta = c:describe_stream_summary { StreamName = "s" }
      assert.is_nil(err)
      assert.equal("ACTIVE", out.StreamDescriptionSummary.StreamStatus)
      assert.equal(3, meta.attempts)
      assert.equal(3, stub:stats().total)
      c:close()
    end)

    it("gives up after max_attempts of " .. what, function()
      stub:queue { resp, resp, resp, { status = 200, body = OK } }
      local c = client { mode = "standard", max_attempts = 3, base = 0.01 }
      local out, err, meta = c:describe_stream_summary { StreamName = "s" }
      assert.is_nil(out)
      assert.equal(code, err.code)
      assert.equal(3, err.attempts)
      assert.equal(3, meta.attempts)
      assert.equal(3, stub:stats().total)
      c:close()
    end)
  end

  it("never retries validation-like or not-found errors", function()
    for _, body in ipairs {
      '{"__type":"ResourceNotFoundException","message":"no"}',
      '{"__type":"InvalidArgumentException","message":"no"}',
      '{"__type":"ValidationException","message":"no"}',
      '{"__type":"AccessDeniedException","message":"no"}',
    } do
      stub:reset()
      stub:queue { { status = 400, body = body }, { status = 200, body = OK } }
      local c = client { mode = "standard", max_attempts = 5, base = 0.01 }
      local out, err = c:describe_stream_summary { StreamName = "s" }
      assert.is_nil(out)
      assert.equal(1, err.attempts)
      assert.equal(1, stub:stats().total)
      c:close()
    end
  end)

  it("makes one attempt with mode = off", function()
    stub:queue { THROTTLE, { status = 200, body = OK } }
    local c = client { mode = "off" }
    local _, err = c:describe_stream_summary { StreamName = "s" }
    assert.equal(1, err.attempts)
    assert.equal(1, stub:stats().total)
  end)

  it("empties the retry quota under a storm and refills it on success", function()
    local c = client { mode = "standard", max_attempts = 2, base = 0.001 }
    -- every call fails twice: each retry costs 5 tokens of 500
    local q = {}
    for i = 1, 220 do q[i] = { status = 500, body = "" } end
    stub:queue(q)
    local quota_errors, calls = 0, 0
    while c.retry.quota >= retry.RETRY_COST do
      local _, err = c:describe_stream_summary { StreamName = "s" }
      calls = calls + 1
      assert.equal("InternalFailure", err.code)
    end
    assert.equal(100, calls)               -- 500 / 5 retries
    local _, err = c:describe_stream_summary { StreamName = "s" }
    assert.is_true(err.retry_quota_exceeded)
    assert.equal(1, err.attempts)          -- no retry without quota
    assert.equal(201, stub:stats().total)
    stub:reset()
    -- successes refill: a first-try success earns one token
    local q2 = {}
    for i = 1, 10 do q2[i] = { status = 200, body = OK } end
    stub:queue(q2)
    local before = c.retry.quota
    for _ = 1, 10 do assert(c:describe_stream_summary { StreamName = "s" }) end
    assert.equal(before + 10, c.retry.quota)
    -- a success after a retry gives back what that retry took
    stub:queue { { status = 500, body = "" }, { status = 200, body = OK } }
    local q_before = c.retry.quota
    local _, e2, meta = c:describe_stream_summary { StreamName = "s" }
    assert.is_nil(e2)
    assert.equal(2, meta.attempts)
    assert.equal(q_before, c.retry.quota)
  end)

  it("charges 10 tokens for a timeout retry", function()
    local c = client({ mode = "standard", max_attempts = 2, base = 0.001 }, { request = 0.3 })
    stub:queue { { action = "stall" }, { action = "stall" } }
    local _, err = c:describe_stream_summary { StreamName = "s" }
    assert.equal("Timeout", err.code)
    assert.equal(retry.QUOTA_MAX - retry.TIMEOUT_COST, c.retry.quota)
  end)

  it("stops retrying when the total timeout would be exceeded", function()
    stub:queue { { action = "stall" }, { action = "stall" }, { action = "stall" }, { status = 200, body = OK } }
    local c = client({ mode = "standard", max_attempts = 10, base = 0.01 }, { request = 0.4, total = 1 })
    local t0 = require("kinesis.core").monotime()
    local out, err = c:describe_stream_summary { StreamName = "s" }
    local elapsed = require("kinesis.core").monotime() - t0
    assert.is_nil(out)
    assert.equal("Timeout", err.code)
    assert.is_true(elapsed < 2.5, "took " .. elapsed)
    assert.is_true(stub:stats().total <= 3)
  end)

  it("corrects a 5-minute clock skew from the server's Date and retries once", function()
    local server_time = os.time() + 300
    local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", server_time)
    stub:queue {
      { status = 400, headers = { Date = date },
        body = '{"__type":"InvalidSignatureException","message":"Signature expired: is now earlier than ..."}' },
      { status = 200, body = OK },
    }
    local c = client { mode = "standard", max_attempts = 3 }
    local out, err, meta = c:describe_stream_summary { StreamName = "s" }
    assert.is_nil(err)
    assert.truthy(out)
    assert.equal(2, meta.attempts)
    local reqs = stub:requests()
    local MON = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" }
    local function amz_time(r)
      local y, mo, d, h, mi, sec = r.headers["x-amz-date"]:match("^(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z$")
      return client_mod.parse_http_date(string.format("Xxx, %s %s %s %s:%s:%s GMT", d, MON[tonumber(mo)], y, h, mi, sec))
    end
    local shift = amz_time(reqs[2]) - amz_time(reqs[1])
    assert.is_true(shift >= 295 and shift <= 305, "shift " .. shift)
    -- the offset is kept for later requests
    stub:queue { { status = 200, body = OK } }
    assert(c:describe_stream_summary { StreamName = "s" })
    local r3 = stub:requests()[3]
    assert.is_true(math.abs(amz_time(r3) - server_time) <= 10)
  end)

  it("parses HTTP dates independently of the local time zone", function()
    assert.equal(0, client_mod.parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"))
    assert.equal(1795647224, client_mod.parse_http_date("Wed, 25 Nov 2026 22:53:44 GMT"))
    assert.equal(951782400, client_mod.parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT"))
    assert.is_nil(client_mod.parse_http_date("yesterday"))
  end)

  it("backs off with full jitter capped at max_backoff", function()
    local p = assert(retry.new { mode = "standard", base = 1, max_backoff = 20 })
    for n = 1, 10 do
      local cap = math.min(2 ^ (n - 1), 20)
      for _ = 1, 100 do
        local d = p:delay(n)
        assert.is_true(d >= 0 and d <= cap)
      end
    end
  end)

  it("adaptive mode slows the send rate after throttles and recovers", function()
    local t = 0
    local lim = retry.rate_limiter(function() return t end)
    assert.equal(0, lim:acquire()) -- disabled until the first throttle
    for _ = 1, 20 do t = t + 0.05 lim:update(false) end
    t = t + 0.05
    lim:update(true)
    assert.is_true(lim.enabled)
    local throttled_rate = lim.fill_rate
    local waits = 0
    for _ = 1, 10 do waits = waits + lim:acquire() end
    assert.is_true(waits > 0, "requests must wait once the limiter is on")
    for _ = 1, 200 do t = t + 0.05 lim:update(false) end
    assert.is_true(lim.fill_rate > throttled_rate)
  end)

  it("adaptive mode retries throttles end to end", function()
    stub:queue { THROTTLE, { status = 200, body = OK } }
    local c = client { mode = "adaptive", max_attempts = 3, base = 0.01 }
    local out, err, meta = c:describe_stream_summary { StreamName = "s" }
    assert.is_nil(err)
    assert.truthy(out)
    assert.equal(2, meta.attempts)
    assert.is_true(c.retry.limiter.enabled)
  end)

  it("refuses a bad retry configuration", function()
    local c, err = kinesis.new { endpoint = stub.endpoint, region = "us-east-1", retry = { mode = "sometimes" } }
    assert.is_nil(c)
    assert.equal("ConfigError", err.code)
    c, err = kinesis.new { endpoint = stub.endpoint, region = "us-east-1", retry = { max_attempts = 0 } }
    assert.is_nil(c)
    assert.truthy(err.message:find("max_attempts", 1, true))
  end)
end)
