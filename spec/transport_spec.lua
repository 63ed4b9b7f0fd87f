-- transport_spec.lua - kinesis.curl (C transport + binding) and the thin
-- kinesis.transport.curl wrapper, against real loopback servers: the
-- programmable stub (spec/support/stub.js) for failure modes, and
-- kinesis-local for HTTP/1.1 and HTTP/2 over TLS.
local peers = require "support.peers"
local curl = require "kinesis.curl"
local cjson = require "cjson"

local function now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("*l"))
  p:close()
  return t
end

-- A Kinesis-shaped request; kinesis-local checks that a SigV4 Authorization
-- and X-Amz-Date are present but not the signature itself.
local function kinesis_request(url, target, body)
  return {
    method = "POST",
    url = url,
    headers = {
      { "Content-Type", "application/x-amz-json-1.1" },
      { "X-Amz-Target", "Kinesis_20131202." .. target },
      { "X-Amz-Date", "20260101T000000Z" },
      { "Authorization", "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/kinesis/"
        .. "aws4_request, SignedHeaders=host;x-amz-date, Signature=00" },
    },
    body = body or "{}",
  }
end

local function all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return table.concat(t)
end

describe("kinesis.curl", function()
  it("reports the libcurl it was built with", function()
    assert.is_string(curl.curl_version)
    assert.is_boolean(curl.http2)
  end)

  describe("against the stub", function()
    local stub

    lazy_setup(function()
      stub = peers.start("stub", { tls = true })
    end)

    lazy_teardown(function()
      if stub then stub.stop() end
    end)

    before_each(function()
      stub:reset()
    end)

    it("does a POST round trip: status, body, request id, and the request as sent", function()
      stub:queue{ { status = 200, body = '{"ok":true}',
                    headers = { ["x-amzn-RequestId"] = "req-1234", ["Content-Type"] = "application/json" } } }
      local h = curl.easy{ timeout = 5 }
      local resp, err = h:send{
        method = "POST", url = stub:url("/path?q=1"),
        headers = { { "Content-Type", "application/x-amz-json-1.1" }, { "X-Amz-Target", "T.Op" },
                    { "X-Empty", "" } },
        body = '{"StreamName":"s"}',
      }
      assert.is_nil(err)
      assert.equals(200, resp.status)
      assert.equals('{"ok":true}', resp.body)
      assert.equals("req-1234", resp.headers["x-amzn-requestid"])
      assert.equals("req-1234", resp.request_id)
      assert.equals("application/json", resp.headers["content-type"])
      assert.equals("1.1", resp.http_version)

      local seen = stub:requests()
      assert.equals(1, #seen)
      assert.equals("POST", seen[1].method)
      assert.equals("/path?q=1", seen[1].path)
      assert.equals("application/x-amz-json-1.1", seen[1].headers["content-type"])
      assert.equals("T.Op", seen[1].headers["x-amz-target"])
      assert.equals("", seen[1].headers["x-empty"])
      assert.equals('{"StreamName":"s"}', seen[1].raw)
      assert.equals(tostring(#'{"StreamName":"s"}'), seen[1].headers["content-length"])
      h:close()
    end)

    it("accepts headers as a name = value map too", function()
      stub:queue{ { status = 204 } }
      local h = curl.easy()
      local resp = assert(h:send{ method = "POST", url = stub:url(), body = "x",
                                  headers = { ["X-One"] = "1", ["X-Two"] = "2" } })
      assert.equals(204, resp.status)
      local seen = stub:requests()[1]
      assert.equals("1", seen.headers["x-one"])
      assert.equals("2", seen.headers["x-two"])
      h:close()
    end)

    it("lower-cases response header names and joins repeated ones with ', '", function()
      stub:queue{ { status = 200, body = "", headers = { ["X-Dup"] = { "a", "b" }, ["X-MiXeD"] = "v" } } }
      local h = curl.easy()
      local resp = assert(h:send{ url = stub:url() })
      assert.equals("a, b", resp.headers["x-dup"])
      assert.equals("v", resp.headers["x-mixed"])
      assert.is_nil(resp.headers["X-MiXeD"])
      assert.is_nil(resp.request_id)
      h:close()
    end)

    it("returns HTTP error statuses as responses, not errors", function()
      local h = curl.easy()
      -- nothing queued: the stub answers 500 StubNoResponseQueued
      local resp, err = h:send{ method = "POST", url = stub:url(), body = "{}" }
      assert.is_nil(err)
      assert.equals(500, resp.status)
      assert.equals("StubNoResponseQueued", cjson.decode(resp.body).__type)
      h:close()
    end)

    it("reuses one connection for 10 sequential sends (keep-alive)", function()
      local q = {}
      for i = 1, 10 do q[i] = { status = 200, body = "r" .. i } end
      stub:queue(q)
      local h = curl.easy()
      for i = 1, 10 do
        local resp = assert(h:send{ method = "POST", url = stub:url(), body = "n" .. i })
        assert.equals("r" .. i, resp.body)
      end
      assert.same({ requests = 10, connects = 1 }, h:stats())
      local seen = stub:requests()
      assert.equals(10, #seen)
      for i = 2, 10 do assert.equals(seen[1].conn, seen[i].conn) end

      -- control: a second handle has its own connection, and the counter shows it
      local h2 = curl.easy()
      assert(h2:send{ url = stub:url() })
      assert.same({ requests = 1, connects = 1 }, h2:stats())
      seen = stub:requests()
      assert.are_not.equal(seen[1].conn, seen[11].conn)
      h:close()
      h2:close()
    end)

    -- libcurl resends a request once, on a new connection, when a *reused*
    -- connection dies before any response byte (the stale keep-alive case);
    -- a fresh connection that dies is reported (see the reset test below).
    it("reconnects when the server closed or dropped the kept-alive connection", function()
      stub:queue{ { status = 200, body = "1", headers = { Connection = "close" } },
                  { status = 200, body = "2" },
                  { action = "reset" },
                  { status = 200, body = "3" } }
      local h = curl.easy()
      assert.equals("1", assert(h:send{ url = stub:url() }).body)
      assert.equals("2", assert(h:send{ url = stub:url() }).body)   -- after Connection: close
      assert.equals("3", assert(h:send{ url = stub:url() }).body)   -- reset on reuse, resent
      assert.same({ requests = 3, connects = 3 }, h:stats())
      local seen = stub:requests()
      assert.equals(4, #seen)
      assert.are_not.equal(seen[1].conn, seen[2].conn)
      assert.equals(seen[2].conn, seen[3].conn)
      assert.are_not.equal(seen[3].conn, seen[4].conn)
      h:close()
    end)

    it("receives a 6 MiB response body intact", function()
      local chunk, n = "0123456789abcdef", 6 * 65536
      stub:queue{ { status = 200, body_repeat = { chunk, n } } }
      local h = curl.easy{ timeout = 20 }
      local resp = assert(h:send{ url = stub:url() })
      assert.equals(6 * 1024 * 1024, #resp.body)
      assert.is_true(resp.body == string.rep(chunk, n))
      -- and the handle still works (and still on the same connection)
      stub:queue{ { status = 200, body = "small" } }
      assert.equals("small", assert(h:send{ url = stub:url() }).body)
      assert.equals(1, h:stats().connects)
      h:close()
    end)

    it("sends a 3 MiB request body intact, without waiting for 100-continue", function()
      local body = string.rep("abcdefghijklmnopqrstuvwxyz012345", 3 * 32768)
      stub:queue{ { status = 200, body = "ok" } }
      local h = curl.easy{ timeout = 20 }
      local t0 = now()
      local resp = assert(h:send{ method = "POST", url = stub:url(), body = body })
      assert.is_true(now() - t0 < 0.9)   -- curl's 100-continue wait is 1 s
      assert.equals("ok", resp.body)
      local seen = stub:requests()[1]
      assert.equals(#body, seen.body_length)
      assert.is_nil(seen.headers.expect)
      h:close()
    end)

    it("carries every byte value both ways", function()
      local bytes = all_bytes()
      stub:queue{ { status = 200, body = bytes } }
      local h = curl.easy()
      local resp = assert(h:send{ method = "POST", url = stub:url(), body = bytes .. bytes })
      assert.equals(bytes, resp.body)
      assert.equals(bytes .. bytes, stub:requests()[1].raw)
      h:close()
    end)

    it("sends PUT, DELETE and HEAD", function()
      stub:queue{ { status = 201 }, { status = 202 }, { status = 200, headers = { ["X-H"] = "h" } } }
      local h = curl.easy()
      assert.equals(201, assert(h:send{ method = "PUT", url = stub:url("/p"), body = "put" }).status)
      assert.equals(202, assert(h:send{ method = "DELETE", url = stub:url("/d") }).status)
      local head = assert(h:send{ method = "HEAD", url = stub:url("/h") })
      assert.equals("h", head.headers["x-h"])
      assert.equals("", head.body)
      local seen = stub:requests()
      assert.equals("PUT", seen[1].method)
      assert.equals("put", seen[1].raw)
      assert.equals("DELETE", seen[2].method)
      assert.equals("HEAD", seen[3].method)
      h:close()
    end)

    it("reports a refused connection as ConnectionRefused", function()
      local gone = peers.start("stub")
      local url = gone:url()
      gone.stop()
      local h = curl.easy{ connect_timeout = 3 }
      local resp, err = h:send{ url = url }
      assert.is_nil(resp)
      assert.equals("ConnectionRefused", err.code)
      assert.equals(7, err.curl_code)          -- CURLE_COULDNT_CONNECT
      assert.is_string(err.message)
      assert.is_true(#err.message > 0)
      h:close()
    end)

    it("times out a stalled response within the configured timeout", function()
      stub:queue{ { action = "stall" } }
      local h = curl.easy{ timeout = 1 }
      local t0 = now()
      local resp, err = h:send{ method = "POST", url = stub:url(), body = "{}" }
      local elapsed = now() - t0
      assert.is_nil(resp)
      assert.equals("Timeout", err.code)
      assert.equals(28, err.curl_code)         -- CURLE_OPERATION_TIMEDOUT
      assert.is_true(elapsed >= 0.9 and elapsed < 2.5, "elapsed " .. elapsed)
      h:close()
    end)

    it("lets a request override the handle's timeout", function()
      stub:queue{ { action = "stall" } }
      local h = curl.easy{ timeout = 30 }
      local t0 = now()
      local _, err = h:send{ url = stub:url(), timeout = 0.3 }
      local elapsed = now() - t0
      assert.equals("Timeout", err.code)
      assert.is_true(elapsed >= 0.25 and elapsed < 1.5, "elapsed " .. elapsed)
      -- a slow answer inside the timeout is fine
      stub:queue{ { status = 200, body = "late", delay_ms = 300 } }
      assert.equals("late", assert(h:send{ url = stub:url(), timeout = 2 }).body)
      h:close()
    end)

    -- A reset (RST from the peer) is ConnectionReset, never Transport: curl
    -- says CURLE_GOT_NOTHING (52) or CURLE_RECV_ERROR (56) depending on timing.
    it("reports a connection reset as ConnectionReset, and recovers", function()
      stub:queue{ { action = "reset" }, { status = 200, body = "again" } }
      local h = curl.easy()
      local resp, err = h:send{ method = "POST", url = stub:url(), body = "{}" }
      assert.is_nil(resp)
      assert.equals("ConnectionReset", err.code)
      assert.is_true(err.curl_code == 52 or err.curl_code == 56, "curl_code " .. err.curl_code)
      resp = assert(h:send{ url = stub:url() })
      assert.equals("again", resp.body)
      assert.equals(2, h:stats().connects)
      h:close()
    end)

    it("reports a response cut short as ConnectionReset (close after headers, truncated body)", function()
      stub:queue{ { action = "close_after_headers", status = 200 },
                  { action = "truncate", status = 200, body = "partial" } }
      local h = curl.easy()
      local resp, err = h:send{ url = stub:url() }
      assert.is_nil(resp)
      assert.equals("ConnectionReset", err.code)
      assert.equals(18, err.curl_code)         -- CURLE_PARTIAL_FILE
      resp, err = h:send{ url = stub:url() }
      assert.is_nil(resp)
      assert.equals("ConnectionReset", err.code)
      assert.equals(18, err.curl_code)
      h:close()
    end)

    it("rejects header values with CR, LF or NUL before sending anything", function()
      local h = curl.easy()
      for _, bad in ipairs{ "a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b" } do
        local resp, err = h:send{ method = "POST", url = stub:url(), body = "{}",
                                  headers = { { "X-Ok", "fine" }, { "X-Bad", bad } } }
        assert.is_nil(resp)
        assert.equals("InvalidRequest", err.code)
        assert.matches("X%-Bad", err.message)
      end
      local resp, err = h:send{ url = stub:url(), headers = { ["X-Map"] = "v\r\nEvil: 1" } }
      assert.is_nil(resp)
      assert.equals("InvalidRequest", err.code)
      assert.same({}, stub:requests())
      assert.same({ requests = 0, connects = 0 }, h:stats())   -- not even a connect
      -- the handle is still usable
      stub:queue{ { status = 200, body = "ok" } }
      assert.equals("ok", assert(h:send{ url = stub:url() }).body)
      h:close()
    end)

    it("rejects bad header names, methods and URLs before sending", function()
      local h = curl.easy()
      local cases = {
        { url = stub:url(), headers = { { "Bad Name", "v" } } },
        { url = stub:url(), headers = { { "Bad:Name", "v" } } },
        { url = stub:url(), headers = { { "", "v" } } },
        { url = stub:url(), method = "GET /x HTTP/1.1\r\n" },
        { url = stub:url("/a b") },
        { url = stub:url("/a\r\nHost: evil") },
      }
      for i, req in ipairs(cases) do
        local resp, err = h:send(req)
        assert.is_nil(resp, "case " .. i)
        assert.equals("InvalidRequest", err.code, "case " .. i)
      end
      assert.same({}, stub:requests())
      h:close()
    end)

    it("raises on misuse of the API itself", function()
      local h = curl.easy()
      assert.has_error(function() h:send() end)
      assert.has_error(function() h:send{} end)                                  -- no url
      assert.has_error(function() h:send{ url = stub:url(), body = 42 } end)
      assert.has_error(function() h:send{ url = stub:url(), headers = { { "X", 1 } } } end)
      assert.has_error(function() h:send{ url = stub:url(), headers = "X: 1" } end)
      assert.has_error(function() h:send{ url = stub:url(), timeout = -1 } end)
      assert.has_error(function() h:send{ url = "http://x/\0y" } end)
      assert.has_error(function() curl.easy{ timout = 3 } end)                   -- typo
      assert.has_error(function() curl.easy{ verify = "yes" } end)
      assert.has_error(function() curl.easy{ cafile = 1 } end)
      h:close()
    end)

    it("closes idempotently; a closed handle raises", function()
      local h = curl.easy()
      h:close()
      h:close()
      assert.error_matches(function() h:send{ url = stub:url() } end, "closed curl handle")
      assert.has_error(function() h:stats() end)
      do
        local scoped <close> = curl.easy()
        stub:queue{ { status = 200 } }
        assert(scoped:send{ url = stub:url() })
      end
      -- handles left to the collector are freed through __gc
      for _ = 1, 20 do curl.easy() end
      collectgarbage("collect")
    end)

    it("verifies TLS with a CA file, and fails without it", function()
      local cert_ok = curl.easy{ cafile = stub.cafile, timeout = 5 }
      stub:queue{ { status = 200, body = "secure" } }
      local resp, err = cert_ok:send{ url = stub.tls_endpoint .. "/s" }
      assert.is_nil(err)
      assert.equals("secure", resp.body)
      assert.is_true(stub:requests()[1].tls)

      local default = curl.easy{ timeout = 5 }
      resp, err = default:send{ url = stub.tls_endpoint .. "/s" }
      assert.is_nil(resp)
      assert.equals("TLS", err.code)
      assert.equals(60, err.curl_code)         -- CURLE_PEER_FAILED_VERIFICATION
      assert.equals(1, #stub:requests())       -- nothing got through

      local missing = curl.easy{ cafile = peers.root .. "/spec/.tmp/no-such-ca.pem" }
      resp, err = missing:send{ url = stub.tls_endpoint .. "/s" }
      assert.is_nil(resp)
      assert.equals("TLS", err.code)
      cert_ok:close()
      default:close()
      missing:close()
    end)
  end)

  describe("against kinesis-local", function()
    local kl

    lazy_setup(function()
      kl = peers.start("kinesis-local")
    end)

    lazy_teardown(function()
      if kl then kl.stop() end
    end)

    it("does a POST round trip and captures x-amzn-RequestId", function()
      local h = curl.easy{ timeout = 10 }
      local resp, err = h:send(kinesis_request(kl.endpoint .. "/", "ListStreams"))
      assert.is_nil(err)
      assert.equals(200, resp.status)
      assert.equals("1.1", resp.http_version)
      assert.same({}, cjson.decode(resp.body).StreamNames)
      assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", resp.headers["x-amzn-requestid"])
      assert.equals(resp.headers["x-amzn-requestid"], resp.request_id)

      -- an AWS error answer is a response too
      resp = assert(h:send(kinesis_request(kl.endpoint .. "/", "DescribeStream",
                                           '{"StreamName":"missing"}')))
      assert.equals(400, resp.status)
      assert.equals("ResourceNotFoundException", cjson.decode(resp.body).__type)
      h:close()
    end)

    it("keeps one connection alive over 10 sequential calls", function()
      local h = curl.easy{ timeout = 10 }
      local ids = {}
      for i = 1, 10 do
        local resp = assert(h:send(kinesis_request(kl.endpoint .. "/", "ListStreams")))
        assert.equals(200, resp.status)
        ids[resp.request_id] = true
        assert.is_truthy(resp.request_id, "call " .. i)
      end
      local n = 0
      for _ in pairs(ids) do n = n + 1 end
      assert.equals(10, n)                     -- a fresh request id each time
      assert.same({ requests = 10, connects = 1 }, h:stats())
      h:close()
    end)

    -- kinesis-local's TLS port offers h2 through ALPN, so "2" is expected
    -- where libcurl has HTTP/2; without it the answer must be HTTP/1.1.
    it("speaks HTTP/2 over TLS when offered (verify = false), on one connection", function()
      local h = curl.easy{ verify = false, timeout = 10 }
      for _ = 1, 5 do
        local resp, err = h:send(kinesis_request(kl.tls_endpoint .. "/", "ListStreams"))
        assert.is_nil(err)
        assert.equals(200, resp.status)
        assert.equals(curl.http2 and "2" or "1.1", resp.http_version)
        assert.is_truthy(resp.headers["x-amzn-requestid"])
      end
      assert.same({ requests = 5, connects = 1 }, h:stats())
      h:close()
    end)

    it("stays on HTTP/1.1 over TLS with http2 = false", function()
      local h = curl.easy{ verify = false, http2 = false, timeout = 10 }
      local resp = assert(h:send(kinesis_request(kl.tls_endpoint .. "/", "ListStreams")))
      assert.equals(200, resp.status)
      assert.equals("1.1", resp.http_version)
      h:close()
    end)

    it("fails verification by default: the certificate is self-signed", function()
      local h = curl.easy{ timeout = 10 }
      local resp, err = h:send(kinesis_request(kl.tls_endpoint .. "/", "ListStreams"))
      assert.is_nil(resp)
      assert.equals("TLS", err.code)
      assert.equals(60, err.curl_code)
      h:close()
    end)

    it("uses cafile: the chain then verifies, but the certificate names no host", function()
      local conf = assert(io.open(peers.root .. "/node_modules/kinesis-local/server.json")):read("*a")
      local path = peers.root .. "/spec/.tmp/kinesis-local-cert.pem"
      local f = assert(io.open(path, "w"))
      f:write(cjson.decode(conf).server.cert)
      f:close()
      local h = curl.easy{ cafile = path, timeout = 10 }
      local resp, err = h:send(kinesis_request(kl.tls_endpoint .. "/", "ListStreams"))
      assert.is_nil(resp)
      assert.equals("TLS", err.code)
      -- no longer "self-signed": the failure moved on to the host name check
      assert.is_nil(err.message:find("self%-signed"))
      assert.matches("127%.0%.0%.1", err.message)
      h:close()
    end)
  end)
end)

describe("kinesis.transport.curl", function()
  local transport = require "kinesis.transport.curl"
  local stub

  lazy_setup(function()
    stub = peers.start("stub")
  end)

  lazy_teardown(function()
    if stub then stub.stop() end
  end)

  before_each(function()
    stub:reset()
  end)

  it("sends through one reused handle and passes errors through", function()
    local t = transport.new{ timeout = { connect = 2, request = 5 } }
    stub:queue{ { status = 200, body = "one", headers = { ["x-amzn-RequestId"] = "r1" } },
                { status = 200, body = "two" } }
    local resp = assert(t:send{ method = "POST", url = stub:url(), body = "{}" })
    assert.equals("one", resp.body)
    assert.equals("r1", resp.request_id)
    assert.equals("two", assert(t:send{ url = stub:url() }).body)
    assert.same({ requests = 2, connects = 1 }, t:stats())
    local _, err = t:send{ url = stub:url(), headers = { { "X", "a\nb" } } }
    assert.equals("InvalidRequest", err.code)
    t:close()
    t:close()
  end)

  it("maps timeout.request onto the handle", function()
    local t = transport.new{ timeout = { request = 0.5 } }
    stub:queue{ { action = "stall" } }
    local t0 = now()
    local resp, err = t:send{ url = stub:url() }
    local elapsed = now() - t0
    assert.is_nil(resp)
    assert.equals("Timeout", err.code)
    assert.is_true(elapsed >= 0.45 and elapsed < 1.5, "elapsed " .. elapsed)
    t:close()
  end)

  it("refuses to block inside an nginx request phase", function()
    local t = transport.new()
    _G.ngx = { get_phase = function() return "content" end }
    local ok, resp, err = pcall(t.send, t, { url = stub:url() })
    _G.ngx = nil
    assert.is_true(ok)
    assert.is_nil(resp)
    assert.equals("Transport", err.code)
    assert.matches("cosocket", err.message)
    assert.same({}, stub:requests())
    t:close()
  end)
end)
