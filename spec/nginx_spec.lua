-- nginx_spec.lua - lua-kinesis inside a real nginx (Debian nginx +
-- libnginx-mod-http-lua, LuaJIT) against kinesis-local and the loopback
-- stub, driven through HTTP requests to nginx (spec/nginx/nginx.conf,
-- spec/nginx/handler.lua). One worker process: the non-blocking proofs show
-- other requests finishing while one request's upstream call (or waiter
-- sleep) is still pending, which a blocked worker could not do. Also: the
-- OpenResty example (examples/openresty) shipping a request log, and the
-- rock built with `luarocks --lua-version=5.1 make` loading in nginx on its own.

local peers = require "support.peers"
local nginx_support = require "support.nginx"
local cjson = require "cjson"

local ROOT = peers.root
local MODULES = nginx_support.modules
local free_port = nginx_support.free_port

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- runs a shell command; returns exit code and combined output
local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return rc, (out:gsub("__rc=%d+%s*$", ""))
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function sleep(s) os.execute("sleep " .. s) end

-- HTTP to nginx with the curl CLI: status, decoded JSON body (or raw text)
local function http(port, path)
  local rc, out = run("curl -sS --noproxy '*' --max-time 60 -w '\\n%{http_code}' "
    .. sh_quote("http://127.0.0.1:" .. port .. path))
  local body, code = out:match("^(.*)\n(%d%d%d)$")
  assert(rc == 0 and code, "curl failed: " .. out)
  local ok, v = pcall(cjson.decode, body)
  return tonumber(code), ok and v or body
end

-- fires a request in the background; returns a function that waits for
-- it and gives back status, decoded body
local function background(port, path)
  local out = os.tmpname()
  local rc, pid = run("curl -sS --noproxy '*' --max-time 60 -o " .. sh_quote(out)
    .. " -w '%{http_code}' " .. sh_quote("http://127.0.0.1:" .. port .. path)
    .. " > " .. sh_quote(out .. ".code") .. " 2>&1 & echo $!")
  assert(rc == 0)
  pid = tonumber(pid:match("%d+"))
  return function()
    for _ = 1, 600 do
      if not peers.alive(pid) then break end
      sleep(0.1)
    end
    local code = tonumber(read_file(out .. ".code") or "")
    local body = read_file(out) or ""
    os.remove(out)
    os.remove(out .. ".code")
    local ok, v = pcall(cjson.decode, body)
    return code, ok and v or body
  end
end

-- polls f() until it returns a truthy value (up to `tries` tenths of a second)
local function eventually(f, tries, what)
  for _ = 1, tries or 100 do
    local v = f()
    if v then return v end
    sleep(0.1)
  end
  error("gave up waiting for " .. (what or "a condition"), 2)
end

local function summary(name, status)
  return cjson.encode { StreamDescriptionSummary = { StreamName = name, StreamStatus = status or "ACTIVE",
    OpenShardCount = 1 } }
end

local function description(name, status)
  return cjson.encode { StreamDescription = { StreamName = name, StreamStatus = status,
    StreamARN = "arn:aws:kinesis:us-east-1:000000000000:stream/" .. name, Shards = {},
    HasMoreShards = false, RetentionPeriodHours = 24, StreamCreationTimestamp = 1700000000,
    EnhancedMonitoring = {} } }
end

local function has_line(text, needle)
  return text:find(needle, 1, true) ~= nil
end

---------------------------------------------------------------- the spec

describe("lua-kinesis inside nginx (lua-nginx-module, LuaJIT)", function()
  local klocal, stub, nginx
  local port

  lazy_setup(function()
    assert(read_file(MODULES .. "/ngx_http_lua_module.so"), "ngx_http_lua_module.so not found in " .. MODULES)
    assert(read_file(ROOT .. "/build/5.1/kinesis/core.so"), "build/5.1 is missing: run make LUA=luajit")
    klocal = peers.start("kinesis-local", { env = { SHARD_LIMIT = "200", CREATE_STREAM_DURATION = "20ms" } })
    stub = peers.start("stub", { tls = true })
    local config = ("return { kinesis = %q, stub = %q, stub_port = %d, stub_tls_port = %d, "
      .. "credentials = { access_key_id = %q, secret_access_key = %q } }")
      :format(klocal.endpoint, stub.endpoint, stub.port, stub.tls_port,
              peers.credentials.access_key_id, peers.credentials.secret_access_key)
    nginx = nginx_support.start {
      conf = "spec/nginx/nginx.conf", dns = true, vars = { CAFILE = stub.cafile },
      env = { AWS_ACCESS_KEY_ID = "AKIDFROMNGINXENV", AWS_SECRET_ACCESS_KEY = "env-secret",
              KINESIS_SPEC_KEPT = "kept", KINESIS_SPEC_DROPPED = "dropped" },
      files = { ["spec_config.lua"] = config },
    }
    port = nginx.port
  end)

  lazy_teardown(function()
    if nginx then nginx:stop() end
    if stub then stub.stop() end
    if klocal then klocal.stop() end
  end)

  before_each(function() stub:reset() end)

  local function get(path) return http(port, path) end

  describe("the build", function()
    it("loads a kinesis.core that does not link libcurl; only kinesis.curl does", function()
      local rc, core = run("ldd " .. sh_quote(ROOT .. "/build/5.1/kinesis/core.so"))
      assert.equal(0, rc, core)
      assert.truthy(core:find("libcrypto", 1, true), core)
      assert.falsy(core:find("libcurl", 1, true), core)
      local rc2, curl = run("ldd " .. sh_quote(ROOT .. "/build/5.1/kinesis/curl.so"))
      assert.equal(0, rc2, curl)
      assert.truthy(curl:find("libcurl", 1, true), curl)
    end)

    it("loads the modules in the master at init time without I/O or errors", function()
      local log = nginx:log()
      assert.falsy(has_line(log, "[error]"), log)
      assert.falsy(has_line(log, "[alert]"), log)
      assert.falsy(has_line(log, "[emerg]"), log)
    end)
  end)

  describe("operations through the cosocket transport", function()
    it("creates a stream and waits until it is ACTIVE", function()
      local status, r = get("/t/create?stream=ngx-basic&shards=3")
      assert.equal(200, status, cjson.encode(r))
      assert.equal("ACTIVE", r.status)
      assert.equal(3, r.shards)
      assert.is_true(r.attempts >= 1)
      assert.equal(":stream/ngx-basic", r.arn:sub(-17))
    end)

    it("puts records with PutRecord and PutRecords and reads them back with GetRecords", function()
      local status, r = get("/t/put?stream=ngx-basic&n=10")
      assert.equal(200, status, cjson.encode(r))
      assert.equal(0, r.failed)
      assert.equal(10, r.count)
      assert.is_string(r.single.seq)
      assert.truthy(r.single.shard:match("^shardId%-%d+$"))

      local gstatus, g = get("/t/get?stream=ngx-basic")
      assert.equal(200, gstatus, cjson.encode(g))
      assert.equal(11, #g.records)
      local by_pk = {}
      for _, rec in ipairs(g.records) do by_pk[rec.pk] = peers.b64decode(rec.data) end
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      assert.equal(table.concat(all), by_pk.single)
      for i = 1, 10 do assert.equal("record " .. i .. "\0\255", by_pk["pk-" .. i]) end
    end)

    it("pages through 25 shards one page at a time, each shard once", function()
      local status, r = get("/t/create?stream=ngx-pages&shards=25")
      assert.equal(200, status, cjson.encode(r))
      status, r = get("/t/pages?stream=ngx-pages")
      assert.equal(200, status, cjson.encode(r))
      assert.equal(25, r.pages)
      assert.equal(25, #r.ids)
      local seen = {}
      for _, id in ipairs(r.ids) do
        assert.is_nil(seen[id], id)
        seen[id] = true
      end
      assert.equal(25, r.items)
    end)

    it("returns an AWS error as an error table", function()
      local status, r = get("/t/aws_error?n=1")
      assert.equal(200, status)
      assert.is_nil(r.out)
      assert.equal("aws", r.error.kind)
      assert.equal("ResourceNotFoundException", r.error.code)
      assert.equal(400, r.error.status)
      assert.is_false(r.error.retryable)
      assert.equal("DescribeStreamSummary", r.error.op)
    end)

    it("returns validation errors without sending anything", function()
      local status, r = get("/t/validation")
      assert.equal(200, status)
      assert.equal("validation", r.error.kind)
      assert.equal("ValidationError", r.error.code)
      assert.equal("Data", r.error.field)
      assert.equal("validation", r.error2.kind)
      assert.equal("StreamName", r.error2.field)
      assert.equal(0, stub:stats().total)
    end)

    it("retries after a loopback fault, with the backoff sleeping through ngx.sleep", function()
      stub:queue { { status = 500, body = "" }, { status = 200, body = summary("after-retry") } }
      local status, r = get("/t/retry?stream=after-retry")
      assert.equal(200, status, cjson.encode(r))
      assert.is_nil(r.error)
      assert.equal("after-retry", r.out.StreamDescriptionSummary.StreamName)
      assert.equal(2, r.attempts)
      assert.equal(2, stub:stats().total)
    end)
  end)

  describe("never blocks the worker", function()
    it("serves other requests while one waits on a slow upstream", function()
      stub:queue { { status = 200, body = summary("slow"), delay_ms = 4000 } }
      local finish = background(port, "/t/slow")
      -- the slow call has reached the stub and is being held there
      eventually(function()
        local st = stub:stats()
        return st.in_flight == 1 and st.total == 1
      end, 100, "the slow request to reach the stub")
      for _ = 1, 5 do
        local status, r = get("/t/fast")
        assert.equal(200, status)
        assert.is_true(r.ok, cjson.encode(r))
      end
      -- ...and all of that happened while the slow one was still in flight
      local st = stub:stats()
      assert.equal(1, st.in_flight)
      assert.equal(1, st.total)
      local status, r = finish()
      assert.equal(200, status, cjson.encode(r))
      assert.equal("slow", r.name)
    end)

    it("serves other requests while a waiter sleeps between polls", function()
      stub:queue { { status = 200, body = description("w", "CREATING") },
                   { status = 200, body = description("w", "ACTIVE") } }
      local finish = background(port, "/t/wait_stub?delay=4")
      -- the first poll is answered: the waiter is now sleeping
      eventually(function()
        local st = stub:stats()
        return st.total == 1 and st.in_flight == 0
      end, 100, "the waiter's first poll")
      for _ = 1, 5 do
        local status, r = get("/t/fast")
        assert.equal(200, status)
        assert.is_true(r.ok, cjson.encode(r))
      end
      -- the second poll has not been made yet: the sleep is still going on
      assert.equal(1, stub:stats().total)
      local status, r = finish()
      assert.equal(200, status, cjson.encode(r))
      assert.equal("ACTIVE", r.status)
      assert.equal(2, r.attempts)
      assert.equal(2, stub:stats().total)
    end)

    it("fans requests out concurrently with kinesis.spawn (ngx.thread)", function()
      local q = {}
      for i = 1, 20 do q[i] = { status = 200, body = summary("fan"), delay_ms = 1500 } end
      stub:queue(q)
      local status, r = get("/t/fanout?n=20")
      assert.equal(200, status, cjson.encode(r))
      assert.equal(20, r.ok)
      local st = stub:stats()
      assert.equal(20, st.total)
      assert.equal(20, st.max_in_flight)
    end)

    it("refuses the blocking curl transport in a request phase with a clear error", function()
      local status, r = get("/t/curl")
      assert.equal(200, status)
      assert.is_nil(r.out)
      assert.equal("content", r.phase)
      assert.equal("transport", r.error.kind)
      assert.equal("InvalidRequest", r.error.code)
      assert.equal(1, r.error.attempts) -- refused, not retried
      assert.truthy(r.error.message:find("cannot run in the nginx 'content' phase", 1, true), r.error.message)
      assert.truthy(r.error.message:find("cosocket", 1, true), r.error.message)
    end)
  end)

  describe("kinesis.run / spawn / sleep on ngx.thread", function()
    it("keeps the plain scheduler's semantics", function()
      local status, r = get("/t/scheduler")
      assert.equal(200, status, cjson.encode(r))
      assert.equal("one+two", r.a)
      assert.is_false(r.b_ok)
      assert.truthy(r.b_err:find("boom in a task", 1, true))
      assert.truthy(r.b_err:find("stack traceback", 1, true))
      assert.same({ "main", "t1", "t2", "late" }, r.log)
      assert.is_false(r.uncollected_ok)
      assert.truthy(r.uncollected:find("nobody waits for me", 1, true))
      assert.truthy(r.uncollected:find("1 task(s) failed", 1, true))
      assert.is_false(r.nested_ok)
      assert.is_false(r.spawn_outside_ok)
      assert.truthy(r.self_wait:find("cannot wait for itself", 1, true))
    end)

    it("refuses a wait that would leave every task waiting (deadlock)", function()
      local status, r = get("/t/deadlock")
      assert.equal(200, status, cjson.encode(r))
      assert.truthy(r.msg and r.msg:find("deadlock", 1, true), cjson.encode(r))
      assert.is_true(r.run_ok, tostring(r.run_err))
    end)
  end)

  describe("nginx phases", function()
    it("init_worker: the default transport refuses, a forced curl transport works, sleep blocks briefly", function()
      local status, r = get("/t/init_worker")
      assert.equal(200, status)
      assert.is_true(r.forced_curl.ok, cjson.encode(r.forced_curl))
      assert.is_false(r.default.ok)
      assert.equal("InvalidRequest", r.default.error.code)
      assert.truthy(r.default.error.message:find("'init_worker' phase", 1, true), r.default.error.message)
      assert.truthy(r.default.error.message:find('transport = "curl"', 1, true), r.default.error.message)
      assert.equal("slept", r.sleep)
    end)

    it("access phase: calls work before the content handler", function()
      local status, r = get("/phase/access")
      assert.equal(200, status)
      assert.is_true(r.ok, cjson.encode(r))
      assert.equal("access", r.phase)
    end)

    it("timers: kinesis.run fans out from ngx.timer.at", function()
      local status, r = get("/t/timer_start")
      assert.equal(200, status)
      assert.equal(1, r.started)
      local result = eventually(function()
        local _, t = get("/t/timer_result")
        return t.result ~= cjson.null and t.result
      end, 100, "the timer")
      assert.is_true(result.ok)
      assert.equal("timer", result.phase)
    end)

    it("log phase: cosockets are unavailable, and the error says what to do", function()
      local status = get("/phase/log")
      assert.equal(200, status)
      local result = eventually(function()
        local _, t = get("/t/log_result")
        return t.result ~= cjson.null and t.result
      end, 100, "the log phase result")
      assert.equal("InvalidRequest", result.error.code)
      assert.truthy(result.error.message:find("'log' phase", 1, true), result.error.message)
      assert.truthy(result.error.message:find("ngx.timer.at", 1, true), result.error.message)
      assert.equal(0, stub:stats().total)
    end)
  end)

  describe("the cosocket transport", function()
    local function transport(query)
      local status, r = get("/t/transport?" .. query)
      assert.equal(200, status, type(r) == "table" and cjson.encode(r) or r)
      return r
    end

    local function letters(n)
      local t = {}
      for i = 1, n do t[i] = string.rep(string.char(64 + i), 1000 * i) end
      return table.concat(t)
    end

    it("reads a chunked response", function()
      local r = transport("case=chunked&n=6")
      assert.equal(200, r.status)
      assert.equal("chunked", r.headers["transfer-encoding"])
      assert.equal(21000, r.length)
      assert.equal(letters(6), peers.b64decode(r.body_b64))
      assert.equal("1.1", r.version)
    end)

    it("reads a response delimited by the connection closing", function()
      local r = transport("case=close_delimited&n=4")
      assert.equal(200, r.status)
      assert.is_nil(r.headers["transfer-encoding"])
      assert.is_nil(r.headers["content-length"])
      assert.equal(letters(4), peers.b64decode(r.body_b64))
    end)

    it("reads Content-Length bodies (1 MB, empty) and HEAD responses", function()
      local r = transport("case=length&n=1000")
      assert.equal(200, r.status)
      assert.equal("1000000", r.headers["content-length"])
      assert.equal(1000000, r.length)
      r = transport("case=empty")
      assert.equal(200, r.status)
      assert.equal(0, r.length)
      r = transport("case=head")
      assert.equal(200, r.status)
      assert.equal("3000", r.headers["content-length"])
      assert.equal(0, r.length)
    end)

    it("sends the request as given: method, path, headers, body, Host and Content-Length", function()
      stub:queue { { status = 201, body = "created", headers = { ["x-amzn-RequestId"] = "rid-7", ["X-Dup"] = { "a", "b" } } } }
      local r = transport("case=stub&body=hello%20world")
      assert.equal(201, r.status)
      assert.equal("created", peers.b64decode(r.body_b64))
      assert.equal("rid-7", r.request_id)
      assert.equal("a, b", r.headers["x-dup"])
      local seen = stub:requests()
      assert.equal(1, #seen)
      assert.equal("POST", seen[1].method)
      assert.equal("/raw", seen[1].path)
      assert.equal("1.1", seen[1].http_version)
      assert.equal("hello world", seen[1].raw)
      assert.equal("11", seen[1].headers["content-length"])
      assert.equal("127.0.0.1:" .. stub.port, seen[1].headers["host"])
      assert.equal("application/x-amz-json-1.1", seen[1].headers["content-type"])
      assert.equal("v", seen[1].headers["x-custom"])
    end)

    it("accepts headers as a name = value map", function()
      stub:queue { { status = 204 } }
      local r = transport("case=map_headers")
      assert.equal(204, r.status)
      local seen = stub:requests()[1]
      assert.equal("1", seen.headers["x-one"])
      assert.equal("2", seen.headers["x-two"])
    end)

    it("reuses one pooled connection for sequential requests (setkeepalive)", function()
      local q = {}
      for i = 1, 5 do q[i] = { status = 200, body = "r" .. i } end
      stub:queue(q)
      local r = transport("case=sequential&n=5")
      for i = 1, 5 do assert.equal("r" .. i, peers.b64decode(r.list[i].body_b64)) end
      assert.equal(5, r.stats.requests)
      assert.is_true(r.stats.connects <= 1)
      local seen = stub:requests()
      assert.equal(5, #seen)
      for i = 2, 5 do assert.equal(seen[1].conn, seen[i].conn) end
    end)

    it("opens a connection per request with pool = false", function()
      local q = {}
      for i = 1, 3 do q[i] = { status = 200, body = "p" .. i } end
      stub:queue(q)
      local r = transport("case=sequential&n=3&pool=off")
      assert.equal(3, r.stats.connects)
      local seen = stub:requests()
      assert.are_not.equal(seen[1].conn, seen[2].conn)
      assert.are_not.equal(seen[2].conn, seen[3].conn)
    end)

    it("resends once on a new connection when a pooled one dies before answering", function()
      stub:queue { { status = 200, body = "warm" }, { action = "reset" }, { status = 200, body = "second" } }
      local r = transport("case=sequential&n=2")
      assert.equal("warm", peers.b64decode(r.list[1].body_b64))
      assert.equal(200, r.list[2].status)
      assert.equal("second", peers.b64decode(r.list[2].body_b64))
      local seen = stub:requests()
      assert.equal(3, #seen)
      assert.equal(seen[1].conn, seen[2].conn)
      assert.are_not.equal(seen[2].conn, seen[3].conn)
    end)

    it("reports a fresh connection reset, a truncated body and a close after headers as ConnectionReset", function()
      stub:queue { { action = "reset" } }
      local r = transport("case=stub_any&pool=off")
      assert.equal("ConnectionReset", r.error.code)
      stub:queue { { status = 200, body = "short", action = "truncate" } }
      r = transport("case=stub_any&pool=off")
      assert.equal("ConnectionReset", r.error.code)
      stub:queue { { status = 200, action = "close_after_headers" } }
      r = transport("case=stub_any&pool=off")
      assert.equal("ConnectionReset", r.error.code)
      assert.equal(3, stub:stats().total)
    end)

    it("maps the request timeout, and a per-request timeout, to Timeout", function()
      stub:queue { { action = "stall" } }
      local r = transport("case=timeout&timeout=0.5")
      assert.equal("Timeout", r.error.code)
      stub:queue { { action = "stall" } }
      r = transport("case=per_request_timeout&timeout=30")
      assert.equal("Timeout", r.error.code)
    end)

    it("reports ConnectionRefused for a closed port", function()
      local r = transport("case=refused&port=" .. free_port())
      assert.equal("ConnectionRefused", r.error.code)
    end)

    it("resolves names through nginx's resolver, and reports DNS failures", function()
      stub:queue { { status = 200, body = "via dns" } }
      local r = transport("case=dns&port=" .. stub.port)
      assert.equal("DNS", r.bad.error.code)
      assert.truthy(r.bad.error.message:find("no-such-host.invalid", 1, true), r.bad.error.message)
      assert.equal(200, r.good.status)
      assert.equal("via dns", peers.b64decode(r.good.body_b64))
    end)

    it("rejects CR, LF and NUL in headers and bad names or URLs before sending", function()
      local r = transport("case=crlf")
      for _, k in ipairs { "value", "name", "nul", "url" } do
        assert.equal("InvalidRequest", r[k].error.code, k)
      end
      assert.truthy(r.value.error.message:find("CR, LF or NUL", 1, true))
      assert.equal(0, stub:stats().total)
    end)

    it("makes client:subscribe_to_shard end with that error, without a request", function()
      local status, r = get("/t/subscribe")
      assert.equal(200, status, type(r) == "table" and cjson.encode(r) or r)
      assert.equal(0, r.events)
      assert.equal("transport", r.error.kind)
      assert.equal("InvalidRequest", r.error.code)
      assert.is_false(r.error.retryable)
      assert.truthy(r.error.message:find("HTTP/2", 1, true), r.error.message)
      assert.equal(0, stub:stats().total)
    end)

    it("refuses event streams: SubscribeToShard needs HTTP/2", function()
      local r = transport("case=stream")
      assert.is_false(r.streaming)
      assert.equal("InvalidRequest", r.error.code)
      assert.truthy(r.error.message:find("HTTP/2", 1, true), r.error.message)
      assert.equal(0, stub:stats().total)
    end)
  end)

  describe("TLS", function()
    it("verifies the certificate against lua_ssl_trusted_certificate", function()
      stub:queue { { status = 200, body = summary("tls") } }
      local status, r = get("/tls/trusted?host=localhost")
      assert.equal(200, status, cjson.encode(r))
      assert.is_nil(r.error)
      assert.equal("tls", r.name)
      assert.is_true(stub:requests()[1].tls)
    end)

    it("verifies by default: no trust store, no connection", function()
      local status, r = get("/tls/untrusted?host=localhost")
      assert.equal(200, status)
      assert.equal("TLS", r.error.code)
      assert.truthy(r.error.message:find("lua_ssl_trusted_certificate", 1, true), r.error.message)
      assert.equal(0, stub:stats().total)
    end)

    it("checks the host name even when the chain is trusted", function()
      -- kinesis.spec.test resolves to 127.0.0.1 but is not in the certificate
      local status, r = get("/tls/trusted?host=kinesis.spec.test")
      assert.equal(200, status)
      assert.equal("TLS", r.error.code, r.error.message)
      assert.equal(0, stub:stats().total)
    end)

    it("connects without verification only when verify = false", function()
      stub:queue { { status = 200, body = summary("insecure") } }
      local status, r = get("/tls/untrusted?host=localhost&verify=0")
      assert.equal(200, status)
      assert.is_nil(r.error)
      assert.equal("insecure", r.name)
    end)
  end)

  describe("credentials and the environment", function()
    it("sees only the variables kept with env directives, and signs with them", function()
      stub:queue { { status = 200, body = summary("env") } }
      local status, r = get("/t/env")
      assert.equal(200, status, cjson.encode(r))
      assert.equal("kept", r.kept)
      assert.is_nil(r.dropped)   -- set for nginx, but not named by an env directive
      assert.is_nil(r.error)
      assert.equal("env", r.name)
      local auth = stub:requests()[1].headers["authorization"]
      assert.truthy(auth:find("Credential=AKIDFROMNGINXENV/", 1, true), auth)
    end)
  end)

  describe("examples/openresty (request log to a stream through the producer)", function()
    local kinesis = require "kinesis"
    local plain   -- a plain-Lua client (curl transport) that checks what nginx wrote

    lazy_setup(function()
      plain = assert(kinesis.new { endpoint = klocal.endpoint, region = peers.region,
                                   credentials = peers.credentials })
    end)
    lazy_teardown(function() if plain then plain:close() end end)

    -- the example as shipped, with the port, the worker count and the
    -- checkout's paths filled in
    local function start_example(stream, flush_interval, max_buffer_bytes)
      local conf = read_file(ROOT .. "/examples/openresty/nginx.conf")
      local n
      conf, n = conf:gsub("listen 8080;", "listen 127.0.0.1:{{PORT}};")
      assert.equal(1, n)
      conf, n = conf:gsub("worker_processes auto;", "worker_processes 1;")
      assert.equal(1, n)
      conf = conf:gsub("%$prefix/%.%./%.%./", ROOT .. "/")
      conf = conf:gsub("(location / {)", "location = /ready { return 204; log_by_lua_block { } }\n    %1", 1)
      local srv = nginx_support.start {
        text = conf,
        env = { KINESIS_STREAM = stream, KINESIS_ENDPOINT = klocal.endpoint, AWS_REGION = peers.region,
                AWS_ACCESS_KEY_ID = peers.credentials.access_key_id,
                AWS_SECRET_ACCESS_KEY = peers.credentials.secret_access_key,
                KINESIS_FLUSH_INTERVAL = tostring(flush_interval),
                KINESIS_MAX_BUFFER_BYTES = max_buffer_bytes and tostring(max_buffer_bytes) or nil },
        files = { ["kinesis_logger.lua"] = read_file(ROOT .. "/examples/openresty/kinesis_logger.lua") },
      }
      return srv, srv.port
    end

    local function create(stream)
      assert(plain:create_stream { StreamName = stream, ShardCount = 2 })
      assert(plain:wait("stream_exists", { StreamName = stream }, { delay = 0.05, max_attempts = 100 }))
    end

    -- every log line in the stream, decoded
    local function read_lines(stream)
      local lines = {}
      for shard, err in plain:items("list_shards", { StreamName = stream }) do
        assert(shard, tostring(err))
        local it = assert(plain:get_shard_iterator { StreamName = stream, ShardId = shard.ShardId,
                                                     ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
        while it do
          local out = assert(plain:get_records { ShardIterator = it })
          for _, r in ipairs(out.Records) do
            -- the producer aggregates: read the user records as the KCL does
            for _, u in ipairs(assert(kinesis.deaggregate(r, { shard = shard }))) do
              local line = cjson.decode(u.Data)
              line.partition_key = u.PartitionKey
              lines[#lines + 1] = line
            end
          end
          if #out.Records == 0 then break end
          it = out.NextShardIterator
        end
      end
      return lines
    end

    local function uris(lines, prefix)
      local seen, n = {}, 0
      for _, l in ipairs(lines) do
        if l.uri:sub(1, #prefix) == prefix then
          assert.is_nil(seen[l.uri], "logged twice: " .. l.uri)
          seen[l.uri] = l
          n = n + 1
        end
      end
      return seen, n
    end

    it("ships one line per request in batches, readable by a plain-Lua client", function()
      create("nginx-log-1")
      local srv, eport = start_example("nginx-log-1", 0.5)
      local ok, err = pcall(function()
        local rc, out = run("curl -sS --noproxy '*' 'http://127.0.0.1:" .. eport .. "/page/[1-120]?x=1' > /dev/null")
        assert.equal(0, rc, out)
        local st = eventually(function()
          local _, s = http(eport, "/kinesis-logger/stats")
          return s.sent == 120 and s
        end, 100, "120 lines sent")
        assert.equal(120, st.buffered)
        assert.equal(0, st.pending)
        assert.equal(0, st.dropped)
        assert.equal(0, st.errors)
        assert.is_true(st.batches >= 1 and st.batches < 120, "batches " .. st.batches)
        local seen, n = uris(read_lines("nginx-log-1"), "/page/")
        assert.equal(120, n)
        for i = 1, 120 do
          local l = seen["/page/" .. i]
          assert.is_table(l, "/page/" .. i)
          assert.equal("GET", l.method)
          assert.equal(200, l.status)
          assert.equal("x=1", l.args)
          assert.equal(l.request_id, l.partition_key)
        end
        assert.falsy(has_line(srv:log(), "[error]"), srv:log())
      end)
      srv:stop()
      assert(ok, err)
    end)

    it("flushes what is buffered when nginx shuts down", function()
      create("nginx-log-2")
      -- a flush interval far beyond the test: only the exit flush can send
      local srv, eport = start_example("nginx-log-2", 3600)
      local ok, err = pcall(function()
        local rc, out = run("curl -sS --noproxy '*' 'http://127.0.0.1:" .. eport .. "/bye/[1-7]' > /dev/null")
        assert.equal(0, rc, out)
        local _, st = http(eport, "/kinesis-logger/stats")
        assert.equal(7, st.pending)
        assert.equal(0, st.sent)
      end)
      srv:stop()   -- graceful (SIGQUIT): the producer's sender sees the worker exiting and sends at once
      assert(ok, err)
      local _, n = uris(read_lines("nginx-log-2"), "/bye/")
      assert.equal(7, n)
    end)

    it("refuses lines in the log phase when the buffer is full (BufferFull), and delivers the rest", function()
      create("nginx-log-3")
      -- room for a few lines only, and no send before shutdown
      local srv, eport = start_example("nginx-log-3", 3600, 1200)
      local st
      local ok, err = pcall(function()
        local rc, out = run("curl -sS --noproxy '*' 'http://127.0.0.1:" .. eport .. "/full/[1-20]' > /dev/null")
        assert.equal(0, rc, out)
        local _
        _, st = http(eport, "/kinesis-logger/stats")
        -- the log phase cannot wait: lines past the bound are refused, not queued
        assert.is_true(st.dropped > 0, cjson.encode(st))
        assert.is_true(st.buffered > 0, cjson.encode(st))
        assert.equal(20, st.buffered + st.dropped)
        assert.is_true(st.producer.buffered_bytes_peak <= 1200, cjson.encode(st))
        assert.equal(st.buffered, st.pending)
      end)
      srv:stop()
      assert(ok, err)
      local _, n = uris(read_lines("nginx-log-3"), "/full/")
      assert.equal(st.buffered, n)
    end)
  end)

  describe("the LuaRocks rock", function()
    local tree, rock_nginx

    lazy_teardown(function()
      if rock_nginx then rock_nginx:stop() end
      if tree then os.execute("rm -rf " .. sh_quote(tree)) end
    end)

    it("builds with luarocks --lua-version=5.1 and loads in nginx from its own tree", function()
      tree = os.tmpname()
      os.remove(tree)
      local rc, out = run(("cd %s && luarocks --lua-version=5.1 --tree=%s make --deps-mode=none lua-kinesis-scm-1.rockspec")
        :format(sh_quote(ROOT), sh_quote(tree)))
      assert.equal(0, rc, out)
      local so = tree .. "/lib/lua/5.1/kinesis/core.so"
      local lrc, deps = run("ldd " .. sh_quote(so))
      assert.equal(0, lrc, deps)
      assert.falsy(deps:find("libcurl", 1, true), deps)

      local config = ("return { kinesis = %q, credentials = { access_key_id = %q, secret_access_key = %q } }")
        :format(klocal.endpoint, peers.credentials.access_key_id, peers.credentials.secret_access_key)
      rock_nginx = nginx_support.start { conf = "spec/nginx/rock.conf", vars = { TREE = tree },
                                         files = { ["spec_config.lua"] = config } }
      local rport = rock_nginx.port
      local status, r = http(rport, "/rock")
      assert.equal(200, status, type(r) == "table" and cjson.encode(r) or (r .. rock_nginx:log()))
      assert.truthy(r.core:find(tree, 1, true), r.core)
      assert.truthy(r.transport:find(tree, 1, true), r.transport)
      assert.truthy(r.runtime:find(tree, 1, true), r.runtime)
      assert.equal("16955237001963240173058271559858726497", r.hash_key)
      assert.is_true(r.listed, cjson.encode(r))
      assert.equal("kinesis.transport.cosocket", r.transport_name)
      assert.is_false(r.curl_loaded)
    end)
  end)
end)
