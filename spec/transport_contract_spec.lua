-- transport_contract_spec.lua - one contract, both transports: every case of
-- spec/support/transport_cases.lua (timeouts, resets, TLS verification, big
-- bodies, header injection) runs with the curl transport in plain Lua and
-- inside kinesis.run (its multi handle), and with the cosocket transport in
-- a real nginx (spec/nginx/contract.conf), and every run must pass the same
-- assertions on the error table. One stub (HTTP and a self-signed HTTPS
-- port), one fault proxy in front of it and one nginx serve the whole file.
local peers = require "support.peers"
local faultproxy = require "support.faultproxy"
local nginx = require "support.nginx"
local cases = require "support.transport_cases"
local kinesis = require "kinesis"
local cjson = require "cjson"
local socket = require "socket"

-- A listener whose accept queue is full and never drained: the kernel drops
-- further SYNs, so a connect to it gets no answer at all (a connect timeout
-- on loopback, with no route to anywhere else).
local function blackhole()
  local l = assert(socket.tcp())
  assert(l:bind("127.0.0.1", 0))
  assert(l:listen(0))
  local _, port = l:getsockname()
  local fillers = {}
  for i = 1, 3 do
    local s = socket.tcp()
    s:settimeout(0.2)
    s:connect("127.0.0.1", port)
    fillers[i] = s
  end
  return {
    endpoint = "http://127.0.0.1:" .. port,
    close = function()
      for _, s in ipairs(fillers) do s:close() end
      l:close()
    end,
  }
end

describe("the transport contract (curl and cosocket)", function()
  local stub, proxy, ngx_srv, hole, endpoints
  local h = {}

  lazy_setup(function()
    stub = peers.start("stub", { tls = true })
    proxy = faultproxy.start { upstream = stub.endpoint }
    hole = blackhole()
    endpoints = {
      stub = stub.endpoint, stub_tls = stub.tls_endpoint, proxy = proxy.endpoint,
      stub_tls_name = "https://localhost:" .. stub.tls_port,
      blackhole = hole.endpoint, refused = "http://127.0.0.1:" .. nginx.free_port(),
    }
    ngx_srv = nginx.start { conf = "spec/nginx/contract.conf", vars = { CAFILE = stub.cafile }, dns = true }
    h.stub, h.proxy = stub, proxy
  end)

  lazy_teardown(function()
    if ngx_srv then ngx_srv:stop() end
    if hole then hole.close() end
    if proxy then proxy:stop() end
    if stub then stub.stop() end
  end)

  before_each(function()
    stub:reset()
    proxy:reset()
  end)

  -- the context a case's run() gets in this process, for the curl
  -- transport; made(): what it made, to be closed after the case
  local function curl_ctx()
    local made = {}
    local ctx = {
      transport = "curl", endpoints = endpoints, region = peers.region, credentials = peers.credentials,
      trust = { cafile = stub.cafile },   -- per client here; per location in nginx
      client = function(endpoint, extra)
        local cfg = { transport = "curl" }
        for k, v in pairs(extra or {}) do cfg[k] = v end
        local c = peers.client({ endpoint = endpoint }, cfg)
        made[#made + 1] = c
        return c
      end,
      raw_transport = function(opts) return require("kinesis.transport.curl").new(opts) end,
    }
    return ctx, function()
      for _, c in ipairs(made) do c:close() end
    end
  end

  -- { name, transport, run(case) -> result }
  local runners = {
    { "curl", "curl", function(case)
      local ctx, close = curl_ctx()
      local result = case.run(ctx)
      close()
      return result
    end },
    { "curl inside kinesis.run", "curl", function(case)
      local ctx, close = curl_ctx()
      local result
      kinesis.run(function() result = case.run(ctx) end)
      close()
      return result
    end },
    { "cosocket inside nginx", "cosocket", function(case)
      local ctx = { endpoints = endpoints, region = peers.region, credentials = peers.credentials }
      local status, text = ngx_srv:post((case.trusted and "/trusted/" or "/case/") .. case.name, cjson.encode(ctx))
      assert.equal(200, status, text .. "\n" .. ngx_srv:log():sub(-2000))
      return cjson.decode(text)
    end },
  }

  -- the assertions every transport must pass
  local function check(case, r, transport)
    local differs = case.differs and case.differs[transport]
    local e = differs and differs.expect or case.expect
    local why = cjson.encode(r.err or {}):sub(1, 600)
    if e.ok ~= nil then assert.equal(e.ok, r.ok, why) end
    if e.kind then
      assert.is_table(r.err, "no error table")
      assert.equal(e.kind, r.err.kind, why)
      assert.equal(e.code, r.err.code, why)
      assert.equal(e.retryable, r.err.retryable, why)
      assert.truthy(#r.err.message > 0, why)
    elseif e.ok then
      assert.is_nil(r.err, why)
    end
    if e.attempts then assert.equal(e.attempts, r.attempts) end
    if e.elapsed then
      assert.is_true(r.elapsed >= e.elapsed[1] and r.elapsed < e.elapsed[2],
        ("took %.3f s, expected %g to %g s"):format(r.elapsed, e.elapsed[1], e.elapsed[2]))
    end
    if e.stub_requests then
      assert.equal(e.stub_requests, #stub:requests { raw = false }, "requests the server saw")
    end
    if e.fault then
      assert.equal(1, proxy:stats().faults[e.fault], "the proxy's " .. e.fault)
    end
    if case.check and not differs then case.check(assert, r, h, cjson, peers.b64encode) end
  end

  for _, case in ipairs(cases.cases) do
    describe(case.name .. ": " .. case.what, function()
      for _, runner in ipairs(runners) do
        local differs = case.differs and case.differs[runner[2]]
        it("with " .. runner[1] .. (differs and (" (differs: " .. differs.why .. ")") or ""), function()
          if case.setup then case.setup(h, peers.b64encode) end
          local r = runner[3](case)
          assert.is_table(r)
          check(case, r, runner[2])
        end)
      end
    end)
  end

  -- nginx logs the resets the cases provoke at [error]; a Lua error or
  -- anything worse would be the transport's fault
  it("leaves no Lua error and nothing above [error] in nginx's log", function()
    local log = ngx_srv:log()
    for _, needle in ipairs { "[crit]", "[alert]", "[emerg]", "runtime error", "lua entry thread aborted" } do
      assert.falsy(log:find(needle, 1, true), log:sub(-3000))
    end
  end)
end)
