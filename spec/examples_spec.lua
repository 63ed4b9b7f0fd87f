-- The examples are runnable programs: each one runs against a kinesis-local
-- started here and must exit 0.

local peers = require "support.peers"

describe("examples", function()
  local srv

  lazy_setup(function()
    srv = peers.start("kinesis-local", { env = { CREATE_STREAM_DURATION = "200ms", DELETE_STREAM_DURATION = "200ms",
      REGISTER_STREAM_CONSUMER_DURATION = "200ms" } })
  end)
  lazy_teardown(function() if srv then srv.stop() end end)

  local function run(file)
    local cmd = ("cd %s && env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY KINESIS_ENDPOINT=%s lua5.4 examples/%s 2>&1; echo \"__rc=$?\"")
      :format(peers.root, srv.endpoint, file)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    return tonumber(out:match("__rc=(%d+)")), out
  end

  for _, file in ipairs { "quickstart.lua", "paging_and_waiters.lua", "read_shards.lua", "subscribe.lua" } do
    it(file .. " runs to completion", function()
      local rc, out = run(file)
      assert.equal(0, rc, out)
    end)
  end

  -- without an endpoint argument it measures its own delayed loopback
  -- server; the figures are for reading (speed is measured in bench/)
  it("concurrency.lua makes every call both ways and reports the ratio", function()
    local rc, out = run("concurrency.lua")
    assert.equal(0, rc, out)
    assert.truthy(out:find("50 PutRecord calls one after another: ", 1, true), out)
    assert.truthy(out:find("50 PutRecord calls from 50 tasks of kinesis.run: ", 1, true), out)
    assert.truthy(out:find("concurrent / sequential: x%d+%.%d"), out)
  end)

  it("quickstart reads back every record it wrote, binary ones included", function()
    local rc, out = run("quickstart.lua")
    assert.equal(0, rc, out)
    assert.truthy(out:find("read 11 records back (wrote 11)", 1, true), out)
    assert.truthy(out:find("\\x00\\xff\\x01", 1, true), out)
  end)

  it("producer.lua gets an outcome for every record and reads them all back", function()
    local rc, out = run("producer.lua")
    assert.equal(0, rc, out)
    assert.truthy(out:find("acknowledged 3000, failed 0", 1, true), out)
    assert.truthy(out:find("read 3000 records back (acknowledged 3000)", 1, true), out)
    assert.truthy(out:find("producer: 3000 put, 3000 acked", 1, true), out)
  end)
end)
