-- handler.lua - the Lua side of spec/nginx_spec.lua: each location of
-- spec/nginx/nginx.conf calls one function here, which uses lua-kinesis the
-- way an application would (no transport given: the cosocket one is picked)
-- and answers a JSON summary the spec checks. Endpoints and ports come from
-- spec_config.lua, written by the spec into the nginx prefix.

local cjson = require "cjson.safe"
local kinesis = require "kinesis"
local config = require "spec_config"

local ngx = ngx
local encode_base64 = ngx.encode_base64

local M = {}

local creds = config.credentials

local clients = {}

-- one client per endpoint and option set, made on first use in a worker
local function client(name, endpoint, opts)
  local c = clients[name]
  if c then return c end
  local cfg = { endpoint = endpoint, region = "us-east-1", credentials = creds }
  for k, v in pairs(opts or {}) do cfg[k] = v end
  c = assert(kinesis.new(cfg))
  clients[name] = c
  return c
end

local function local_client() return client("local", config.kinesis) end
local function stub_client() return client("stub", config.stub, { retry = { base = 0.01 } }) end

local function reply(t, status)
  ngx.status = status or 200
  ngx.header["Content-Type"] = "application/json"
  ngx.say(assert(cjson.encode(t)))
end

local function err_table(err)
  if not err then return nil end
  return {
    kind = err.kind, code = err.code, message = err.message, status = err.status,
    retryable = err.retryable, op = err.op, field = err.field, request_id = err.request_id,
    attempts = err.attempts,
    text = tostring(err),
  }
end

local function arg(name, default)
  local v = ngx.var["arg_" .. name]
  if v == nil or v == "" then return default end
  return ngx.unescape_uri(v)
end

local routes = {}

-- CreateStream, then the stream_exists waiter (its sleeps are ngx.sleep)
function routes.create()
  local c = local_client()
  local name, shards = arg("stream"), tonumber(arg("shards", "1"))
  local _, err = c:create_stream { StreamName = name, ShardCount = shards }
  if err then return reply({ error = err_table(err) }, 500) end
  local out, werr, attempts = c:wait("stream_exists", { StreamName = name },
    { delay = 0.05, max_delay = 0.2, max_attempts = 200 })
  if not out then return reply({ error = err_table(werr) }, 500) end
  local d = out.StreamDescription
  reply { status = d.StreamStatus, shards = #d.Shards, attempts = attempts, arn = d.StreamARN }
end

-- PutRecord once, then PutRecords with `n` records (binary data included)
function routes.put()
  local c = local_client()
  local name, n = arg("stream"), tonumber(arg("n", "10"))
  local bytes = {}
  for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
  local one, err = c:put_record { StreamName = name, PartitionKey = "single", Data = table.concat(bytes) }
  if not one then return reply({ error = err_table(err) }, 500) end
  local records = {}
  for i = 1, n do
    records[i] = { PartitionKey = "pk-" .. i, Data = "record " .. i .. "\0\255" }
  end
  local many, perr = c:put_records { StreamName = name, Records = records }
  if not many then return reply({ error = err_table(perr) }, 500) end
  local seqs = {}
  for i, r in ipairs(many.Records) do seqs[i] = r.SequenceNumber end
  reply { single = { shard = one.ShardId, seq = one.SequenceNumber },
          failed = many.FailedRecordCount, count = #many.Records, seqs = seqs }
end

-- reads every shard from TRIM_HORIZON with GetRecords; data base64-encoded
function routes.get()
  local c = local_client()
  local name = arg("stream")
  local records = {}
  for shard, err in c:items("list_shards", { StreamName = name }) do
    if not shard then return reply({ error = err_table(err) }, 500) end
    local it, ierr = c:get_shard_iterator { StreamName = name, ShardId = shard.ShardId,
                                            ShardIteratorType = "TRIM_HORIZON" }
    if not it then return reply({ error = err_table(ierr) }, 500) end
    local iter = it.ShardIterator
    for _ = 1, 5 do
      local out, gerr = c:get_records { ShardIterator = iter, Limit = 1000 }
      if not out then return reply({ error = err_table(gerr) }, 500) end
      for _, r in ipairs(out.Records) do
        records[#records + 1] = { pk = r.PartitionKey, data = encode_base64(r.Data), seq = r.SequenceNumber }
      end
      if #out.Records == 0 then break end
      iter = out.NextShardIterator
    end
  end
  reply { records = records }
end

-- ListShards one shard per page through client:pages, and client:items
function routes.pages()
  local c = local_client()
  local name = arg("stream")
  local pages, ids = 0, {}
  for page, err in c:pages("list_shards", { StreamName = name, MaxResults = 1 }) do
    if not page then return reply({ error = err_table(err) }, 500) end
    pages = pages + 1
    for _, s in ipairs(page.Shards) do ids[#ids + 1] = s.ShardId end
  end
  local items = 0
  for shard, err in c:items("list_shards", { StreamName = name, MaxResults = 2 }) do
    if not shard then return reply({ error = err_table(err) }, 500) end
    items = items + 1
  end
  reply { pages = pages, ids = ids, items = items }
end

function routes.aws_error()
  local out, err = local_client():describe_stream_summary { StreamName = "no-such-stream-" .. arg("n", "0") }
  reply { out = out, error = err_table(err) }
end

function routes.validation()
  local out, err = stub_client():put_record { StreamName = "s", PartitionKey = "k" }   -- Data missing
  local out2, err2 = stub_client():put_record { StreamName = string.rep("n", 200), PartitionKey = "k", Data = "x" }
  reply { out = out, error = err_table(err), out2 = out2, error2 = err_table(err2) }
end

-- a call against the stub with the standard retry policy; meta.attempts counts tries
function routes.retry()
  local out, err, meta = stub_client():describe_stream_summary { StreamName = arg("stream", "s") }
  reply { out = out, error = err_table(err), attempts = meta and meta.attempts }
end

-- fans `n` calls out over kinesis.spawn (ngx.thread) and collects them
function routes.fanout()
  local c = stub_client()
  local n = tonumber(arg("n", "10"))
  local results = kinesis.run(function()
    local tasks = {}
    for i = 1, n do
      tasks[i] = kinesis.spawn(function()
        local out, err = c:describe_stream_summary { StreamName = "fan-" .. i }
        if not out then error(tostring(err)) end
        return out.StreamDescriptionSummary.StreamName
      end)
    end
    return kinesis.wait_all(tasks)
  end)
  local names, oks = {}, 0
  for i, r in ipairs(results) do
    if r[1] then oks = oks + 1 end
    names[i] = r[2]
  end
  reply { ok = oks, names = names }
end

-- the scheduler's semantics inside nginx: errors kept to their task, a task
-- waiting for a sibling, results of run, nesting and misuse refused
function routes.scheduler()
  local log = {}
  local a, b = kinesis.run(function()
    local t1 = kinesis.spawn(function() kinesis.sleep(0.2) log[#log + 1] = "t1" return "one" end)
    local t2 = kinesis.spawn(function()
      local ok, v = t1:wait()          -- a sibling, not the parent, waits
      log[#log + 1] = "t2"
      return ok and (v .. "+two")
    end)
    local bad = kinesis.spawn(function() kinesis.sleep(0.05) error("boom in a task") end)
    local ok, e = bad:wait()
    log[#log + 1] = "main"
    local r = kinesis.wait_all { t1, t2 }
    return r[2][2], { ok = ok, err = e }
  end)
  local uncollected_ok, uncollected = pcall(kinesis.run, function()
    kinesis.spawn(function() error("nobody waits for me") end)
    kinesis.spawn(function() kinesis.sleep(0.05) log[#log + 1] = "late" end)
  end)
  local nested_ok = pcall(kinesis.run, function() kinesis.run(function() end) end)
  local spawn_outside_ok = pcall(kinesis.spawn, function() end)
  local self_wait
  kinesis.run(function()
    local me
    me = kinesis.spawn(function()
      kinesis.sleep(0.01)
      local ok, e = pcall(me.wait, me)
      self_wait = not ok and tostring(e)
    end)
  end)
  reply {
    a = a, b_ok = b.ok, b_err = tostring(b.err), log = log,
    uncollected_ok = uncollected_ok, uncollected = tostring(uncollected),
    nested_ok = nested_ok, spawn_outside_ok = spawn_outside_ok, self_wait = self_wait,
  }
end

-- two tasks waiting for each other: the second wait is refused
function routes.deadlock()
  local msg
  local ok, err = pcall(kinesis.run, function()
    local t1, t2
    t1 = kinesis.spawn(function()
      kinesis.sleep(0.01)
      return t2:wait()
    end)
    t2 = kinesis.spawn(function()
      kinesis.sleep(0.02)
      local wok, e = pcall(t1.wait, t1)
      msg = not wok and tostring(e)
      return "t2 done"
    end)
    -- main waits too, so every live task is waiting when t2 calls wait
    return t1:wait()
  end)
  reply { run_ok = ok, run_err = err and tostring(err), msg = msg }
end

-- SubscribeToShard through the client: the cosocket transport cannot stream
function routes.subscribe()
  local c = stub_client()
  local events, first_err = 0, nil
  for event, err in c:subscribe_to_shard { ConsumerARN = "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c:1700000000",
                                           ShardId = "shardId-000000000000",
                                           StartingPosition = { Type = "TRIM_HORIZON" } } do
    if not event then
      first_err = err
      break
    end
    events = events + 1
  end
  reply { events = events, error = err_table(first_err) }
end

-- one call to the stub (the spec queues a slow answer for it)
function routes.slow()
  local out, err = stub_client():describe_stream_summary { StreamName = "slow" }
  reply { name = out and out.StreamDescriptionSummary.StreamName, error = err_table(err) }
end

-- a quick call to kinesis-local
function routes.fast()
  local out, err = local_client():list_streams {}
  reply { ok = out ~= nil, error = err_table(err) }
end

-- the stream_exists waiter against the stub with a fixed delay
function routes.wait_stub()
  local d = tonumber(arg("delay", "1"))
  local out, err, attempts = stub_client():wait("stream_exists", { StreamName = "w" },
    { delay = d, max_delay = d, max_attempts = 5 })
  reply { status = out and out.StreamDescription.StreamStatus, error = err_table(err), attempts = attempts }
end

-- the blocking transport asked for explicitly in a request phase
function routes.curl()
  local c = client("curl", config.kinesis, { transport = "curl", retry = { mode = "off" } })
  local out, err = c:list_streams {}
  reply { out = out, error = err_table(err), phase = ngx.get_phase() }
end

-- what init_worker saw (see M.init_worker)
function routes.init_worker()
  local dict = ngx.shared.kinesis_spec
  reply {
    forced_curl = cjson.decode(dict:get("init_worker_forced") or "null"),
    default = cjson.decode(dict:get("init_worker_default") or "null"),
    sleep = dict:get("init_worker_sleep"),
  }
end

-- the raw transport: requests the spec describes, against nginx itself or the stub
function routes.transport()
  local cos = require "kinesis.transport.cosocket"
  local which = arg("case")
  local pool = nil
  if arg("pool") == "off" then pool = false end
  local t = cos.new { timeout = { connect = 2, request = tonumber(arg("timeout", "10")) }, pool = pool }
  local base = "http://127.0.0.1:" .. ngx.var.server_port
  local function send(req)
    local resp, err = t:send(req)
    if not resp then return { error = err } end
    return { status = resp.status, length = #resp.body, body_b64 = encode_base64(resp.body),
             headers = resp.headers, version = resp.http_version, request_id = resp.request_id }
  end
  local out
  if which == "chunked" or which == "close_delimited" or which == "length" or which == "empty" then
    out = send { method = "GET", url = base .. "/source/" .. which .. "?n=" .. arg("n", "5") }
  elseif which == "head" then
    out = send { method = "HEAD", url = base .. "/source/length?n=3" }
  elseif which == "stub" then
    out = send { method = "POST", url = config.stub .. "/raw", body = arg("body", "hello"),
                 headers = { { "Content-Type", "application/x-amz-json-1.1" }, { "X-Custom", "v" } } }
  elseif which == "map_headers" then
    out = send { method = "POST", url = config.stub .. "/map", body = "m",
                 headers = { ["X-One"] = "1", ["X-Two"] = "2" } }
  elseif which == "sequential" then
    local list = {}
    for i = 1, tonumber(arg("n", "5")) do
      list[i] = send { method = "POST", url = config.stub .. "/seq", body = "n" .. i }
    end
    out = { list = list, stats = t:stats() }
  elseif which == "crlf" then
    out = { value = send { method = "POST", url = config.stub .. "/x", body = "x",
                           headers = { { "X-Bad", "a\r\nX-Injected: 1" } } },
            name = send { method = "POST", url = config.stub .. "/x", body = "x",
                          headers = { { "X Bad", "v" } } },
            nul = send { method = "POST", url = config.stub .. "/x", body = "x",
                         headers = { { "X-Nul", "a\0b" } } },
            url = send { method = "POST", url = config.stub .. "/x y", body = "x" } }
  elseif which == "refused" then
    out = send { method = "POST", url = "http://127.0.0.1:" .. arg("port") .. "/", body = "x" }
  elseif which == "timeout" then
    out = send { method = "POST", url = config.stub .. "/slow", body = "x" }
  elseif which == "per_request_timeout" then
    out = send { method = "POST", url = config.stub .. "/slow", body = "x", timeout = 0.3 }
  elseif which == "stub_any" then
    out = send { method = "POST", url = config.stub .. "/any", body = "x" }
  elseif which == "stream" then
    local resp, err = t:open_stream { method = "POST", url = config.stub .. "/s", body = "{}" }
    out = { resp = resp, error = err, streaming = cos.streaming }
  elseif which == "dns" then
    out = { bad = send { method = "GET", url = "http://no-such-host.invalid:" .. arg("port") .. "/" },
            good = send { method = "POST", url = "http://localhost:" .. arg("port") .. "/dns", body = "x" } }
  else
    return reply({ error = "unknown case " .. tostring(which) }, 400)
  end
  reply(out)
end

-- the sources the transport reads: nginx answers chunked, close-delimited
-- and Content-Length responses itself
function M.source()
  local kind = ngx.var.source_kind
  local n = tonumber(ngx.var.arg_n) or 5
  if kind == "length" then
    local body = string.rep("L", n * 1000)
    ngx.header["Content-Length"] = #body
    ngx.header["X-Kind"] = "length"
    ngx.print(body)
    return
  end
  if kind == "empty" then
    ngx.header["Content-Length"] = 0
    return
  end
  ngx.header["X-Kind"] = kind
  for i = 1, n do
    ngx.print(string.rep(string.char(64 + i), 1000 * i))
    ngx.flush(true)
  end
end

-- TLS to the stub's HTTPS port; the location decides whether a trust
-- store is configured (lua_ssl_trusted_certificate)
function M.tls()
  local host = arg("host", "127.0.0.1")
  local verify = arg("verify", "1") == "1"
  -- the connection pool is per worker, not per location: a location with
  -- its own trust store keeps its connections in a pool of its own
  local c = kinesis.new { endpoint = "https://" .. host .. ":" .. config.stub_tls_port,
    region = "us-east-1", credentials = creds, verify = verify, retry = { mode = "off" },
    pool = { name = "kinesis" .. ngx.var.uri } }
  local out, err = c:describe_stream_summary { StreamName = "tls" }
  reply { name = out and out.StreamDescriptionSummary.StreamName, error = err_table(err) }
end

-- credentials from the environment nginx kept (env directives)
function routes.env()
  local c = kinesis.new { endpoint = config.stub, region = "us-east-1", retry = { mode = "off" } }
  local out, err = c:describe_stream_summary { StreamName = "env" }
  reply {
    kept = os.getenv("KINESIS_SPEC_KEPT"), dropped = os.getenv("KINESIS_SPEC_DROPPED"),
    name = out and out.StreamDescriptionSummary.StreamName, error = err_table(err),
  }
end

-- the log phase cannot use cosockets: what the client said there
function routes.log_result()
  local v = ngx.shared.kinesis_spec:get("log_phase")
  reply { result = cjson.decode(v or "null") }
end

function routes.timer_result()
  local v = ngx.shared.kinesis_spec:get("timer")
  reply { result = cjson.decode(v or "null") }
end

-- starts a timer that calls kinesis-local and stores the answer
function routes.timer_start()
  ngx.shared.kinesis_spec:delete("timer")
  local ok, err = ngx.timer.at(0, function(premature)
    if premature then return end
    local results = kinesis.run(function()
      local a = kinesis.spawn(function() return local_client():list_streams {} end)
      local b = kinesis.spawn(function() return local_client():list_streams {} end)
      return kinesis.wait_all { a, b }
    end)
    local ok1, ok2 = results[1][1] and results[1][2] ~= nil, results[2][1] and results[2][2] ~= nil
    ngx.shared.kinesis_spec:set("timer", cjson.encode { ok = ok1 and ok2, phase = ngx.get_phase() })
  end)
  reply { started = ok, error = err }
end

function M.content()
  local name = ngx.var.route
  local fn = routes[name]
  if not fn then return reply({ error = "no route " .. tostring(name) }, 404) end
  fn()
end

-- access phase: a call before the content handler runs
function M.access()
  local out, err = local_client():list_streams {}
  ngx.ctx.access = { ok = out ~= nil, error = err_table(err), phase = ngx.get_phase() }
end

function M.access_content()
  reply(ngx.ctx.access or { missing = true })
end

function M.log_phase()
  local out, err = stub_client():describe_stream_summary { StreamName = "from-log" }
  ngx.shared.kinesis_spec:set("log_phase", cjson.encode { out = out, error = err_table(err) })
end

-- init_worker: no cosockets. The default transport refuses with a clear
-- error; transport = "curl" may be forced here (start-up only).
function M.init_worker()
  local dict = ngx.shared.kinesis_spec
  local forced = kinesis.new { endpoint = config.kinesis, region = "us-east-1", credentials = creds,
                               transport = "curl", retry = { mode = "off" } }
  local out, err = forced:list_streams {}
  forced:close()
  dict:set("init_worker_forced", cjson.encode { ok = out ~= nil, error = err_table(err) })
  local default = kinesis.new { endpoint = config.kinesis, region = "us-east-1", credentials = creds }
  local out2, err2 = default:list_streams {}
  dict:set("init_worker_default", cjson.encode { ok = out2 ~= nil, error = err_table(err2) })
  -- kinesis.sleep blocks briefly here instead of raising; run/spawn run inline
  local v = kinesis.run(function()
    local t = kinesis.spawn(function() kinesis.sleep(0.01) return "slept" end)
    local ok, r = t:wait()
    return ok and r
  end)
  dict:set("init_worker_sleep", v)
end

return M
