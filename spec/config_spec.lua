-- config_spec.lua - one rule for the configuration and for misuse: unknown
-- options and wrong types are refused at kinesis.new with a ConfigError
-- naming the option; validation is the same whichever modules are loaded;
-- methods called with a dot and unknown waiters get a message that says
-- what to do. Each case pins a defect found by review (issue 11, 2-4).
local peers = require "support.peers"
local kinesis = require "kinesis"

describe("configuration and misuse", function()
  local stub

  lazy_setup(function() stub = peers.start("stub") end)
  lazy_teardown(function() if stub then stub.stop() end end)
  before_each(function() stub:reset() end)

  local function refused(cfg, field, words)
    local c, err = kinesis.new(cfg)
    assert.is_nil(c)
    assert.equal("validation", err.kind)
    assert.equal("ConfigError", err.code)
    assert.equal(field, err.field)
    for _, w in ipairs(words) do
      assert.truthy(tostring(err):find(w, 1, true), tostring(err) .. " should say " .. w)
    end
  end

  it("refuses an unknown option, naming it and the options there are", function()
    refused({ regoin = "eu-west-1", endpoint = stub.endpoint }, "regoin", { "unknown option regoin", "region" })
  end)

  it("refuses wrong types at kinesis.new, not at the first request", function()
    refused({ region = "us-east-1", transport = "http" }, "transport", { "transport", "curl" })
    refused({ region = "us-east-1", transport = {} }, "transport", { "send" })
    refused({ region = "us-east-1", timeout = 5 }, "timeout", { "must be a table" })
    refused({ region = "us-east-1", timeout = { conect = 1 } }, "timeout", { "unknown key conect" })
    refused({ region = "us-east-1", timeout = { request = -1 } }, "timeout.request", { "seconds" })
    refused({ region = "us-east-1", retry = { mode = "fast" } }, "retry.mode", { "standard" })
    refused({ region = 42 }, "region", { "must be a string" })
    refused({ region = "us-east-1", verify = "yes" }, "verify", { "boolean" })
    refused({ region = "us-east-1", log = 1 }, "log", { "function" })
    assert.same({}, stub:requests())
  end)

  it("answers a configuration that is not a table with nil, err as well", function()
    local c, err = kinesis.new("us-east-1")
    assert.is_nil(c)
    assert.equal("ConfigError", err.code)
    assert.truthy(err.message:find("table", 1, true))
  end)

  it("accepts every documented option", function()
    local c = assert(kinesis.new {
      region = "us-east-1", endpoint = stub.endpoint, credentials = peers.credentials, profile = "default",
      retry = { mode = "adaptive", max_attempts = 2, base = 0.1, max_backoff = 1 },
      timeout = { connect = 1, request = 2, total = 5, event = 3 }, transport = "curl", verify = true,
      clock = os.time, use_fips = false, use_dualstack = false, account_id = "123456789012",
      account_id_endpoint_mode = "disabled", imds_v1_fallback = false, log = function() end,
    })
    c:close()
  end)

  it("validates a 128-bit hash key with only kinesis.client loaded", function()
    -- a fresh process that never requires "kinesis" (its init patched the
    -- validator from outside before)
    local script = ([[
      local client = require "kinesis.client"
      local c = assert(client.new { endpoint = %q, region = "us-east-1",
        credentials = { access_key_id = "AKID", secret_access_key = "s" }, retry = { mode = "off" } })
      local out, err = c:put_record { StreamName = "s", PartitionKey = "k", Data = "d",
        ExplicitHashKey = "340282366920938463463374607431768211456" }
      print(out == nil and err.kind .. " " .. tostring(err.field) .. " " .. tostring(err.rule) or "sent")
      print(package.loaded["kinesis"] == nil and "kinesis not loaded" or "kinesis loaded")
    ]]):format(stub.endpoint)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    local p = assert(io.popen("lua5.4 " .. path .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    os.remove(path)
    assert.truthy(out:find("validation ExplicitHashKey range", 1, true), out)
    assert.truthy(out:find("kinesis not loaded", 1, true), out)
    assert.same({}, stub:requests())
  end)

  it("says to use a colon when a method is called with a dot", function()
    local c = peers.client(stub)
    local ok, err = pcall(function() return c.put_record { StreamName = "s", PartitionKey = "k", Data = "d" } end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("client:put_record(...)", 1, true), tostring(err))
    ok, err = pcall(function() return c.pages("list_shards", { StreamName = "s" }) end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("client:pages(...)", 1, true), tostring(err))
    assert.same({}, stub:requests())
    c:close()
  end)

  it("lists the waiters there are when a waiter name is unknown", function()
    local c = peers.client(stub)
    local ok, err = pcall(c.wait, c, "stream_exist", { StreamName = "s" })
    assert.is_false(ok)
    for _, name in ipairs { "stream_exists", "stream_not_exists", "consumer_active" } do
      assert.truthy(tostring(err):find(name, 1, true), tostring(err))
    end
    c:close()
  end)
end)
