-- transport_cases.lua - the transport contract: each case is written once
-- here and run by spec/transport_contract_spec.lua with the curl transport
-- (plain Lua, and inside kinesis.run) and with the cosocket transport inside
-- nginx (spec/nginx/contract_handler.lua), then checked with the same
-- assertions. Loads in Lua 5.4 and in LuaJIT: no I/O at require time.
--
-- A case: name; what (the sentence the spec prints); setup(h, b64encode)
-- in the spec process (h.stub, h.proxy: queue answers, script faults);
-- run(ctx) where the transport runs, returning plain data (ctx.client(
-- endpoint, extra), ctx.raw_transport(opts), ctx.endpoints, ctx.trust);
-- expect (what every transport's result must show, checked by the spec);
-- check(assert, result, h, cjson, b64encode) for the rest.
-- Where the transports legitimately differ, `differs[transport]` holds the
-- expectation that replaces `expect` for it, and `why`.

local monotime = require("kinesis.core").monotime

local M = {}

local OFF = { mode = "off" }

local LIST_OK = '{"StreamNames":["contract-a","contract-b","contract-c","contract-d"],'
  .. '"HasMoreStreams":false}'
M.LIST_OK = LIST_OK

---------------------------------------------------------------- big bodies

M.BIG_RECORDS = 5
local BLOCK, REPEAT = 768, 1365     -- 1,048,320 bytes a record: under 1 MiB with its key

--- A 768-byte block holding every byte value, rotated by i.
function M.block(i)
  local t = {}
  for j = 0, BLOCK - 1 do t[j + 1] = string.char((j + i * 37) % 256) end
  return table.concat(t)
end

--- Record i of the big bodies: its block repeated (a multiple of 3 bytes,
-- so its base64 is the block's base64 repeated too).
function M.big(i)
  return M.block(i):rep(REPEAT)
end
M.BLOCK_REPEAT = REPEAT

---------------------------------------------------------------- helpers

-- the parts of an error table the contract speaks about
local function err_fields(err)
  if not err then return nil end
  return { kind = err.kind, code = err.code, retryable = err.retryable, message = err.message, op = err.op }
end

-- one call through a client, summarised as plain data
local function call(c, op, params)
  local t0 = monotime()
  local out, err, meta = c:call(op, params)
  local r = { ok = out ~= nil, err = err_fields(err), attempts = meta and meta.attempts,
              elapsed = monotime() - t0 }
  return r, out
end

local function stub_ok(h, n)
  local q = {}
  for i = 1, n or 1 do q[i] = { status = 200, body = LIST_OK } end
  h.stub:queue(q)
end

---------------------------------------------------------------- the cases

M.cases = {
  {
    name = "connect_timeout",
    what = "a connect nobody answers ends at the connect timeout, well before the request timeout",
    run = function(ctx)
      local c = ctx.client(ctx.endpoints.blackhole, { timeout = { connect = 0.3, request = 5 }, retry = OFF })
      return (call(c, "ListStreams", {}))
    end,
    expect = { ok = false, kind = "transport", code = "Timeout", retryable = true, attempts = 1,
               elapsed = { 0.25, 2.5 } },
  },
  {
    name = "refused",
    what = "a port nothing listens on is ConnectionRefused",
    run = function(ctx)
      local c = ctx.client(ctx.endpoints.refused, { retry = OFF })
      return (call(c, "ListStreams", {}))
    end,
    expect = { ok = false, kind = "transport", code = "ConnectionRefused", retryable = true, attempts = 1 },
  },
  {
    name = "request_timeout",
    what = "a server that never answers ends at the request timeout",
    setup = function(h) h.stub:queue { { action = "stall" } } end,
    run = function(ctx)
      local c = ctx.client(ctx.endpoints.stub, { timeout = { connect = 2, request = 0.5 }, retry = OFF })
      return (call(c, "ListStreams", {}))
    end,
    expect = { ok = false, kind = "transport", code = "Timeout", retryable = true, attempts = 1,
               elapsed = { 0.45, 3 }, stub_requests = 1 },
  },
  {
    name = "stall_mid",
    what = "an answer that stops half-way through its body ends at the request timeout",
    setup = function(h)
      stub_ok(h)
      h.proxy:script { { kind = "stall_mid" } }
    end,
    run = function(ctx)
      local c = ctx.client(ctx.endpoints.proxy, { timeout = { connect = 2, request = 0.5 }, retry = OFF })
      return (call(c, "ListStreams", {}))
    end,
    expect = { ok = false, kind = "transport", code = "Timeout", retryable = true, attempts = 1,
               elapsed = { 0.45, 3 }, fault = "stall_mid" },
  },
  {
    name = "reset_before",
    what = "a connection reset before any byte of the answer is ConnectionReset",
    setup = function(h) h.proxy:script { { kind = "reset_before" } } end,
    run = function(ctx)
      local c = ctx.client(ctx.endpoints.proxy, { retry = OFF })
      return (call(c, "ListStreams", {}))
    end,
    expect = { ok = false, kind = "transport", code = "ConnectionReset", retryable = true, attempts = 1,
               stub_requests = 0, fault = "reset_before" },
  },
  {
    name = "reset_mid",
    what = "a connection reset half-way through the body is ConnectionReset",
    setup = function(h)
      stub_ok(h)
      h.proxy:script { { kind = "reset_mid" } }
    end,
    run = function(ctx)
      local c = ctx.client(ctx.endpoints.proxy, { retry = OFF })
      return (call(c, "ListStreams", {}))
    end,
    expect = { ok = false, kind = "transport", code = "ConnectionReset", retryable = true, attempts = 1,
               stub_requests = 1, fault = "reset_mid" },
  },
  {
    name = "truncated",
    what = "a connection closed (FIN) before Content-Length bytes came is ConnectionReset",
    setup = function(h)
      stub_ok(h)
      h.proxy:script { { kind = "truncate" } }
    end,
    run = function(ctx)
      local c = ctx.client(ctx.endpoints.proxy, { retry = OFF })
      return (call(c, "ListStreams", {}))
    end,
    expect = { ok = false, kind = "transport", code = "ConnectionReset", retryable = true, attempts = 1,
               stub_requests = 1, fault = "truncate" },
  },
  {
    name = "reused_reset",
    what = "a kept-alive connection reset before any byte of the answer is replaced by a new one, unseen",
    setup = function(h)
      stub_ok(h, 2)
      h.proxy:script { { kind = "pass" }, { kind = "reset_before" }, { kind = "pass" } }
    end,
    run = function(ctx)
      local c = ctx.client(ctx.endpoints.proxy, { retry = OFF })
      local first = call(c, "ListStreams", {})
      local r = call(c, "ListStreams", {})
      r.first_ok = first.ok
      return r
    end,
    expect = { ok = true, attempts = 1, stub_requests = 2, fault = "reset_before" },
    check = function(assert, r, h)
      assert.is_true(r.first_ok)
      -- the request went out three times: once, then on the reset
      -- connection, then on a new one
      assert.equal(3, h.proxy:stats().requests)
    end,
  },
  {
    name = "tls_default",
    what = "TLS verification is on by default: a self-signed server fails it, unsent",
    run = function(ctx)
      local c = ctx.client(ctx.endpoints.stub_tls, { retry = OFF })
      return (call(c, "ListStreams", {}))
    end,
    expect = { ok = false, kind = "transport", code = "TLS", retryable = false, attempts = 1, stub_requests = 0 },
  },
  {
    name = "tls_verify_off",
    what = "the same server answers with verify = false (the failure above is verification)",
    setup = function(h) stub_ok(h) end,
    run = function(ctx)
      local c = ctx.client(ctx.endpoints.stub_tls, { retry = OFF, verify = false })
      return (call(c, "ListStreams", {}))
    end,
    expect = { ok = true, attempts = 1, stub_requests = 1 },
  },
  {
    name = "tls_trusted",
    what = "the same server answers once its certificate is trusted (by its name, localhost)",
    trusted = true,
    -- how trust is given differs, not what it does: curl takes a CA file per
    -- client (ctx.trust = { cafile = }); a cosocket handshake cannot take
    -- one, so nginx trusts it per location (lua_ssl_trusted_certificate)
    setup = function(h) stub_ok(h) end,
    run = function(ctx)
      local extra = { retry = OFF }
      for k, v in pairs(ctx.trust) do extra[k] = v end
      local c = ctx.client(ctx.endpoints.stub_tls_name, extra)
      return (call(c, "ListStreams", {}))
    end,
    expect = { ok = true, attempts = 1, stub_requests = 1 },
  },
  {
    name = "tls_trusted_ip",
    what = "a trusted certificate for the IP address 127.0.0.1, reached by that address",
    trusted = true,
    differs = {
      cosocket = {
        why = "nginx checks the peer's name with X509_check_host, which matches DNS names only: "
          .. "a certificate's IP address never verifies through a cosocket, so reach such a server by name",
        expect = { ok = false, kind = "transport", code = "TLS", retryable = false, attempts = 1,
                   stub_requests = 0 },
      },
    },
    setup = function(h) stub_ok(h) end,
    run = function(ctx)
      local extra = { retry = OFF }
      for k, v in pairs(ctx.trust) do extra[k] = v end
      local c = ctx.client(ctx.endpoints.stub_tls, extra)
      return (call(c, "ListStreams", {}))
    end,
    expect = { ok = true, attempts = 1, stub_requests = 1 },
  },
  {
    name = "large_request",
    what = "a 5 MiB request body (PutRecords, 5 records of 1 MiB) arrives whole",
    setup = function(h)
      local recs = {}
      for i = 1, M.BIG_RECORDS do recs[i] = '{"SequenceNumber":"' .. i .. '","ShardId":"shardId-000000000000"}' end
      h.stub:queue { { status = 200, body = '{"FailedRecordCount":0,"Records":[' .. table.concat(recs, ",") .. "]}" } }
    end,
    run = function(ctx)
      local records = {}
      for i = 1, M.BIG_RECORDS do records[i] = { PartitionKey = "k" .. i, Data = M.big(i) } end
      local c = ctx.client(ctx.endpoints.stub, { retry = OFF, timeout = { request = 60 } })
      local r, out = call(c, "PutRecords", { StreamName = "contract", Records = records })
      r.acknowledged = out and #out.Records
      return r
    end,
    expect = { ok = true, attempts = 1, stub_requests = 1 },
    check = function(assert, r, h, cjson, b64encode)
      assert.equal(M.BIG_RECORDS, r.acknowledged)
      local req = h.stub:requests({ raw = false })[1]
      assert.is_true(req.body_length > M.BIG_RECORDS * 2 ^ 20, "request body of " .. req.body_length .. " bytes")
      local sent = cjson.decode(req.body)
      assert.equal(M.BIG_RECORDS, #sent.Records)
      for i = 1, M.BIG_RECORDS do
        local want = b64encode(M.block(i)):rep(M.BLOCK_REPEAT)
        assert.is_true(sent.Records[i].Data == want, "record " .. i .. " arrived altered")
      end
    end,
  },
  {
    name = "large_response",
    what = "a 7 MiB response body (GetRecords, 5 records of 1 MiB) is read whole",
    setup = function(h, b64encode)
      local recs = {}
      for i = 1, M.BIG_RECORDS do
        recs[i] = '{"Data":"' .. b64encode(M.block(i)):rep(M.BLOCK_REPEAT) .. '","PartitionKey":"k' .. i
          .. '","SequenceNumber":"' .. i .. '","ApproximateArrivalTimestamp":1700000000}'
      end
      h.stub:queue { { status = 200, body = '{"Records":[' .. table.concat(recs, ",")
        .. '],"NextShardIterator":"it-2","MillisBehindLatest":0}' } }
    end,
    run = function(ctx)
      local c = ctx.client(ctx.endpoints.stub, { retry = OFF, timeout = { request = 60 } })
      local r, out = call(c, "GetRecords", { ShardIterator = "it-1" })
      if out then
        r.sizes, r.intact = {}, {}
        for i, rec in ipairs(out.Records) do
          r.sizes[i] = #rec.Data
          r.intact[i] = rec.Data == M.big(i)
        end
      end
      return r
    end,
    expect = { ok = true, attempts = 1, stub_requests = 1 },
    check = function(assert, r)
      assert.equal(M.BIG_RECORDS, #r.sizes)
      for i = 1, M.BIG_RECORDS do
        assert.equal(#M.big(i), r.sizes[i])
        assert.is_true(r.intact[i], "record " .. i .. " came back altered")
      end
    end,
  },
  {
    name = "header_injection",
    what = "a header name or value that could split the request is refused unsent (InvalidRequest)",
    setup = function(h) stub_ok(h) end,
    run = function(ctx)
      -- the raw transport: the client never builds such headers itself
      local t = ctx.raw_transport { timeout = { connect = 2, request = 5 } }
      local url = ctx.endpoints.stub .. "/"
      local function send(name, value)
        local resp, err = t:send { method = "POST", url = url, body = "{}",
          headers = { { "Content-Type", "application/x-amz-json-1.1" }, { name, value } } }
        return { status = resp and resp.status, err = err and { code = err.code, message = err.message } }
      end
      local r = {
        crlf = send("X-Bad", "a\r\nX-Injected: 1"),
        lf = send("X-Bad", "a\nX-Injected: 1"),
        cr = send("X-Bad", "a\rX-Injected: 1"),
        nul = send("X-Bad", "a\0b"),
        name = send("X-Bad\r\nX-Injected", "1"),
        -- and a clean header still goes out on the same transport
        good = send("X-Good", "fine"),
      }
      if t.close then t:close() end
      return r
    end,
    expect = { stub_requests = 1 },
    check = function(assert, r, h)
      for _, k in ipairs { "crlf", "lf", "cr", "nul", "name" } do
        assert.is_nil(r[k].status, k)
        assert.equal("InvalidRequest", r[k].err.code, k)
        assert.truthy(r[k].err.message:find("X-Bad", 1, true), k .. ": " .. r[k].err.message)
      end
      assert.equal(200, r.good.status)
      local seen = h.stub:requests({ raw = false })
      assert.equal("fine", seen[1].headers["x-good"])
      assert.is_nil(seen[1].headers["x-injected"])
    end,
  },
}

M.by_name = {}
for _, c in ipairs(M.cases) do M.by_name[c.name] = c end

return M
