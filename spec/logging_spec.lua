-- logging_spec.lua - kinesis.new{ log = fn } and KINESIS_LOG=debug: which
-- events a call produces (request, response, throttle, retry with reason
-- and delay, endpoint, credentials), one line each on stderr, nothing when
-- off, and the example in docs/logging.md is this spec's real output (run
-- with UPDATE_DOCS=1 to rewrite it after a deliberate change).
local peers = require "support.peers"
local cjson = require "cjson"
local kinesis = require "kinesis"

local DOC = peers.root .. "/docs/logging.md"
local BEGIN, END = "<!-- log example: begin -->", "<!-- log example: end -->"

local THROTTLED = {
  status = 400, headers = { ["Content-Type"] = "application/x-amz-json-1.1", ["x-amzn-RequestId"] = "req-throttled" },
  body = cjson.encode { __type = "ProvisionedThroughputExceededException", message = "Rate exceeded for shard" },
}
local OK = {
  status = 200, headers = { ["Content-Type"] = "application/x-amz-json-1.1", ["x-amzn-RequestId"] = "req-ok" },
  body = cjson.encode { ShardId = "shardId-000000000000", SequenceNumber = "49590338271490256608559692538361571095921575989136588898" },
}

-- what varies from run to run: times, durations, delays, the stub's port
local function normalize(text)
  return (text:gsub("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ", "2026-12-03T10:00:00.000Z")
    :gsub("ms=[%d.]+", "ms=12.345"):gsub("delay=[%d.]+", "delay=0.123")
    :gsub("127%.0%.0%.1:%d+", "127.0.0.1:4568"))
end

describe("logging", function()
  local stub

  lazy_setup(function() stub = peers.start("stub") end)
  lazy_teardown(function() if stub then stub.stop() end end)
  before_each(function() stub:reset() end)

  it("hands every event of a call that retries once to the log function", function()
    stub:queue { THROTTLED, OK }
    local events = {}
    local c = peers.client(stub, { log = function(ev) events[#events + 1] = ev end,
                                   retry = { base = 0.01 } })
    local out = assert(c:put_record { StreamName = "s", PartitionKey = "k", Data = "x" })
    assert.equal("shardId-000000000000", out.ShardId)
    local names = {}
    for i, ev in ipairs(events) do names[i] = ev.event end
    -- the endpoint is configured: no resolution to log
    assert.same({ "credentials", "request", "response", "throttle", "retry", "request", "response" }, names)
    assert.equal("ProvisionedThroughputExceededException", events[5].reason)
    assert.is_true(events[5].delay >= 0 and events[5].delay <= 0.01)
    assert.equal(2, events[6].attempt)
    c:close()
  end)

  it("prints one line per event on stderr with KINESIS_LOG=debug, and the docs show that output", function()
    stub:queue { THROTTLED, OK }
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
      local kinesis = require "kinesis"
      local c = assert(kinesis.new { endpoint = %q, region = "us-east-1",
        credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = "wJalrSECRET", session_token = "TOKENSECRET" },
        retry = { base = 0.01 } })
      local out, err = c:put_record { StreamName = "events", PartitionKey = "user-1", Data = "hello" }
      print(out and out.ShardId or tostring(err))
    ]]):format(stub.endpoint))
    f:close()
    local p = assert(io.popen("KINESIS_LOG=debug lua5.4 " .. script .. " 2>&1 1>/dev/null"))
    local err_text = p:read("*a")
    p:close()
    os.remove(script)
    local lines = {}
    for line in err_text:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equal(7, #lines, err_text)
    for _, line in ipairs(lines) do
      assert.truthy(line:match("^kinesis %d%d%d%d%-%d%d%-%d%dT[%d:.]+Z event=%a"), line)
      assert.falsy(line:find("SECRET", 1, true), line)
    end
    assert.truthy(lines[4]:find("event=throttle op=PutRecord code=ProvisionedThroughputExceededException", 1, true), lines[4])
    assert.truthy(lines[5]:find("event=retry op=PutRecord attempt=1 reason=ProvisionedThroughputExceededException delay=", 1, true), lines[5])
    local block = "```\n" .. normalize(table.concat(lines, "\n")) .. "\n```"
    local doc = peers.read_file(DOC)
    local b, e = doc:find(BEGIN, 1, true), doc:find(END, 1, true)
    assert.truthy(b and e, "docs/logging.md has no " .. BEGIN .. " ... " .. END .. " block")
    local current = doc:sub(b + #BEGIN, e - 1):gsub("^%s+", ""):gsub("%s+$", "")
    if os.getenv("UPDATE_DOCS") == "1" and current ~= block then
      doc = doc:sub(1, b + #BEGIN - 1) .. "\n" .. block .. "\n" .. doc:sub(e)
      local w = assert(io.open(DOC, "wb"))
      w:write(doc)
      w:close()
      current = block
    end
    assert.equal(block, current)
  end)

  it("logs nothing and calls nothing when off", function()
    stub:queue { OK }
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
      local kinesis = require "kinesis"
      local c = assert(kinesis.new { endpoint = %q, region = "us-east-1",
        credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = "s" } })
      assert(c.logger == nil)
      print(assert(c:put_record { StreamName = "events", PartitionKey = "k", Data = "x" }).ShardId)
    ]]):format(stub.endpoint))
    f:close()
    local p = assert(io.popen("env -u KINESIS_LOG lua5.4 " .. script .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    assert.equal("shardId-000000000000\n", out)
  end)

  it("logs endpoint resolutions and subscription waits", function()
    local events = {}
    local c = assert(kinesis.new { region = "eu-west-1", credentials = peers.credentials,
      transport = { send = function() return { status = 200, headers = {}, body = "{\"StreamNames\":[],\"HasMoreStreams\":false}" } end },
      log = function(ev) events[#events + 1] = ev end })
    assert(c:list_streams {})
    assert.equal("endpoint", events[1].event)
    assert.equal("https://kinesis.eu-west-1.amazonaws.com/", events[1].url)
  end)
end)
