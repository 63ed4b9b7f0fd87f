-- kinesis.run / spawn / sleep: requests from many coroutines in flight at
-- once over one curl multi handle (the stub counts how many it holds at a
-- time), sleep interleaving, errors kept to their task, no busy waiting.

local kinesis = require "kinesis"
local peers = require "support.peers"
local cjson = require "cjson"

describe("the coroutine scheduler", function()
  local stub, c

  lazy_setup(function()
    stub = peers.start("stub")
    c = peers.client(stub, { timeout = { request = 10 } })
  end)
  lazy_teardown(function()
    if c then c:close() end
    if stub then stub.stop() end
  end)
  before_each(function() stub:reset() end)

  local function summary(name)
    return cjson.encode { StreamDescriptionSummary = { StreamName = name, StreamStatus = "ACTIVE", OpenShardCount = 1 } }
  end

  it("keeps 50 tasks' requests in flight at once", function()
    local q = {}
    for i = 1, 50 do q[i] = { status = 200, body = summary("s"), delay_ms = 1500 } end
    stub:queue(q)
    local results = kinesis.run(function()
      local tasks = {}
      for i = 1, 50 do
        tasks[i] = kinesis.spawn(function()
          local out, err = c:describe_stream_summary { StreamName = "s" .. i }
          return out and out.StreamDescriptionSummary.StreamStatus or tostring(err)
        end)
      end
      return kinesis.wait_all(tasks)
    end)
    assert.equal(50, #results)
    for i = 1, 50 do
      assert.is_true(results[i][1])
      assert.equal("ACTIVE", results[i][2])
    end
    local st = stub:stats()
    assert.equal(50, st.total)
    assert.is_true(st.max_in_flight >= 40, "max in flight " .. tostring(st.max_in_flight))
  end)

  it("returns the main function's results and blocks as usual outside run", function()
    stub:queue { { status = 200, body = summary("x") } }
    local a, b = kinesis.run(function() return 1, "two" end)
    assert.equal(1, a)
    assert.equal("two", b)
    local out = assert(c:describe_stream_summary { StreamName = "x" })
    assert.equal("x", out.StreamDescriptionSummary.StreamName)
  end)

  it("interleaves sleep and calls", function()
    stub:queue { { status = 200, body = summary("a"), delay_ms = 100 } }
    local log = {}
    kinesis.run(function()
      kinesis.spawn(function()
        kinesis.sleep(0.6)
        log[#log + 1] = "slept"
      end)
      kinesis.spawn(function()
        assert(c:describe_stream_summary { StreamName = "a" })
        log[#log + 1] = "called"
      end)
      kinesis.spawn(function()
        kinesis.sleep(0.3)
        log[#log + 1] = "short sleep"
      end)
      log[#log + 1] = "main"
    end)
    assert.same({ "main", "called", "short sleep", "slept" }, log)
  end)

  it("keeps an error to its task, with a traceback, while the others finish", function()
    stub:queue { { status = 200, body = summary("ok"), delay_ms = 200 } }
    local finished = false
    local ok, err
    kinesis.run(function()
      local bad = kinesis.spawn(function()
        kinesis.sleep(0.05)
        error("boom in a task")
      end)
      kinesis.spawn(function()
        assert(c:describe_stream_summary { StreamName = "ok" })
        finished = true
      end)
      ok, err = bad:wait()
    end)
    assert.is_true(finished)
    assert.is_false(ok)
    assert.truthy(err:find("boom in a task", 1, true))
    assert.truthy(err:find("stack traceback", 1, true))
  end)

  it("raises an uncollected task error from run after the others complete", function()
    local finished = false
    local ok, err = pcall(kinesis.run, function()
      kinesis.spawn(function() error("nobody waits for me") end)
      kinesis.spawn(function() kinesis.sleep(0.1) finished = true end)
    end)
    assert.is_false(ok)
    assert.is_true(finished)
    assert.truthy(tostring(err):find("nobody waits for me", 1, true))
  end)

  it("applies the request timeout per request inside run", function()
    stub:queue { { action = "stall" }, { status = 200, body = summary("fast") } }
    local c2 = peers.client(stub, { timeout = { request = 0.5 }, retry = { mode = "off" } })
    local slow_err, fast_out
    kinesis.run(function()
      kinesis.spawn(function() _, slow_err = c2:describe_stream_summary { StreamName = "slow" } end)
      kinesis.spawn(function() fast_out = c2:describe_stream_summary { StreamName = "fast" } end)
    end)
    c2:close()
    assert.equal("Timeout", slow_err.code)
    assert.equal("fast", fast_out.StreamDescriptionSummary.StreamName)
  end)

  it("does not busy-wait: CPU time stays far below wall time while tasks wait", function()
    local q = {}
    for i = 1, 10 do q[i] = { status = 200, body = summary("s"), delay_ms = 1000 } end
    stub:queue(q)
    local clock0, t0 = os.clock(), kinesis.now and kinesis.now() or require("kinesis.core").monotime()
    kinesis.run(function()
      for _ = 1, 10 do kinesis.spawn(function() assert(c:describe_stream_summary { StreamName = "s" }) end) end
      kinesis.spawn(function() kinesis.sleep(1.2) end)
    end)
    local cpu = os.clock() - clock0
    local wall = require("kinesis.core").monotime() - t0
    assert.is_true(wall >= 1.0)
    assert.is_true(cpu < wall * 0.25, ("cpu %.3f s for %.3f s of waiting"):format(cpu, wall))
  end)

  it("refuses spawn outside run and nested runs", function()
    assert.has_error(function() kinesis.spawn(function() end) end)
    assert.has_error(function()
      kinesis.run(function() kinesis.run(function() end) end)
    end)
  end)
end)
