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

    -- The handle keeps its options between requests and sets only what
    -- changed: a method, body, URL, header or timeout left over from the
    -- previous request would show here.
    it("one handle through changing methods, bodies, URLs, headers and timeouts: each goes out as asked", function()
      local h = curl.easy{ timeout = 10 }
      local plan = {
        { method = "POST", path = "/a", body = "1", headers = { { "X-A", "a" } } },
        { method = "POST", path = "/a", body = "22", headers = { { "X-B", "b" } } },
        { method = "HEAD", path = "/h" },
        { method = "POST", path = "/a", body = "333" },
        { method = "GET", path = "/g" },
        { method = "DELETE", path = "/d" },
        { method = "PUT", path = "/p", body = "put" },
        { method = "POST", path = "/a", body = "" },
        { method = "GET", path = "/g2", headers = { { "X-C", "" } } },
      }
      for i, p in ipairs(plan) do
        stub:reset()
        stub:queue{ { status = 200, body = "r" .. i } }
        local resp = assert(h:send{ method = p.method, url = stub:url(p.path), body = p.body,
                                    headers = p.headers })
        assert.equals(p.method == "HEAD" and "" or "r" .. i, resp.body, "request " .. i)
        local seen = stub:requests()
        assert.equals(1, #seen, "request " .. i)
        assert.equals(p.method, seen[1].method, "request " .. i)
        assert.equals(p.path, seen[1].path, "request " .. i)
        assert.equals(p.body or "", seen[1].raw, "request " .. i)
        assert.equals(i == 1 and "a" or nil, seen[1].headers["x-a"], "request " .. i)
        assert.equals(i == 2 and "b" or nil, seen[1].headers["x-b"], "request " .. i)
        assert.equals(i == #plan and "" or nil, seen[1].headers["x-c"], "request " .. i)
        assert.is_nil(seen[1].headers["expect"], "request " .. i)
      end
      assert.equals(1, h:stats().connects)   -- all of it on one kept-alive connection
      -- a request's own timeout does not stick to the handle
      stub:reset()
      stub:queue{ { action = "stall" } }
      local _, err = h:send{ url = stub:url(), timeout = 0.3 }
      assert.equals("Timeout", err.code)
      stub:queue{ { status = 200, body = "late", delay_ms = 600 } }
      assert.equals("late", assert(h:send{ url = stub:url() }).body)
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
        assert.equals("2", resp.http_version)
        assert.is_truthy(resp.headers["x-amzn-requestid"])
      end
      assert.same({ requests = 5, connects = 1 }, h:stats())
      h:close()
    end)

    it("multiplexes concurrent requests from a multi over one HTTP/2 connection", function()
      -- Debian's libcurl4-openssl-dev is built with nghttp2
      assert.is_true(curl.http2, "libcurl was built without HTTP/2")
      local n = 20
      local m = curl.multi()
      local handles, pending_ids = {}, {}
      for i = 1, n do
        handles[i] = curl.easy{ verify = false, timeout = 10 }
        local id = assert(m:add(handles[i], kinesis_request(kl.tls_endpoint .. "/", "ListStreams")))
        pending_ids[id] = true
      end
      local done, deadline = 0, os.time() + 15
      while done < n and os.time() < deadline do
        for _, r in ipairs(m:wait(0.5)) do
          assert.is_true(pending_ids[r.id])
          assert.is_nil(r.err)
          assert.equals(200, r.resp.status)
          assert.equals("2", r.resp.http_version)
          done = done + 1
        end
      end
      assert.equals(n, done)
      local connects = 0
      for i = 1, n do connects = connects + handles[i]:stats().connects end
      assert.equals(1, connects)               -- all streams shared one connection
      m:close()
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
    assert.equals("InvalidRequest", err.code)
    assert.matches("cosocket", err.message)
    assert.same({}, stub:requests())
    t:close()
  end)
end)

describe("kinesis.curl multi", function()
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

  -- Waits until every id in `pending` completed or `seconds` passed;
  -- returns a map id -> { resp =, err = }.
  local function drain(m, pending, seconds)
    local results, left = {}, 0
    for _ in pairs(pending) do left = left + 1 end
    local deadline = now() + seconds
    while left > 0 and now() < deadline do
      for _, r in ipairs(m:wait(0.5)) do
        assert.is_true(pending[r.id], "unexpected id " .. tostring(r.id))
        assert.is_nil(results[r.id], "id completed twice")
        results[r.id] = r
        left = left - 1
      end
    end
    return results, left
  end

  it("completes 50 requests in flight at once against a slow server", function()
    local n, delay = 50, 1000
    local q = {}
    for i = 1, n do q[i] = { status = 200, echo_body = true, delay_ms = delay } end
    stub:queue(q)
    local m = curl.multi()
    local handles, pending, body_of = {}, {}, {}
    local t0 = now()
    for i = 1, n do
      handles[i] = curl.easy{ timeout = 20 }
      local id = assert(m:add(handles[i], { method = "POST", url = stub:url("/" .. i),
                                            body = "request-" .. i }))
      pending[id] = true
      body_of[id] = "request-" .. i
      assert.is_true(handles[i]:busy())
    end
    assert.equals(n, m:running())
    local results, left = drain(m, pending, 15)
    local elapsed = now() - t0
    assert.equals(0, left)
    for id, r in pairs(results) do
      assert.is_nil(r.err)
      assert.equals(200, r.resp.status)
      assert.equals(body_of[id], r.resp.body)   -- each result belongs to its request
    end
    -- one after the other this would take n * delay = 50 s
    assert.is_true(elapsed < 2 * delay / 1000 + 2, "elapsed " .. elapsed)
    local stats = stub:stats()
    assert.equals(n, stats.total)
    assert.equals(n, stats.max_in_flight)     -- the server saw them all at once
    assert.equals(0, m:running())
    for i = 1, n do
      assert.is_false(handles[i]:busy())
      assert.same({ requests = 1, connects = 1 }, handles[i]:stats())
      handles[i]:close()
    end
    m:close()
  end)

  it("runs HTTPS requests to an HTTP/1.1-only server side by side", function()
    local n = 20
    local q = {}
    for i = 1, n do q[i] = { status = 200, echo_body = true, delay_ms = 500 } end
    stub:queue(q)
    local m = curl.multi()
    local pending, handles = {}, {}
    local t0 = now()
    for i = 1, n do
      handles[i] = curl.easy{ cafile = stub.cafile, timeout = 20 }
      pending[assert(m:add(handles[i], { url = stub.tls_endpoint .. "/", body = "b" .. i }))] = true
    end
    local results, left = drain(m, pending, 15)
    assert.equals(0, left)
    for _, r in pairs(results) do
      assert.is_nil(r.err)
      assert.equals("1.1", r.resp.http_version)
    end
    assert.is_true(now() - t0 < 3, "elapsed " .. (now() - t0))
    assert.equals(n, stub:stats().max_in_flight)
    m:close()
  end)

  it("keeps in-flight handles and bodies alive through garbage collection", function()
    local n = 10
    local q = {}
    for i = 1, n do q[i] = { status = 200, echo_body = true, delay_ms = 200 } end
    stub:queue(q)
    local m = curl.multi()
    local pending, expect = {}, {}
    for i = 1, n do
      -- neither the handle nor the body is referenced outside the multi
      local id = assert(m:add(curl.easy(), { method = "POST", url = stub:url(),
                                             body = string.rep(string.char(64 + i), 100000) .. i }))
      pending[id] = true
      expect[id] = string.rep(string.char(64 + i), 100000) .. i
    end
    collectgarbage("collect")
    collectgarbage("collect")
    local results, left = drain(m, pending, 10)
    assert.equals(0, left)
    for id, r in pairs(results) do
      assert.is_nil(r.err)
      assert.is_true(r.resp.body == expect[id], "body of request " .. id)
    end
    m:close()
  end)

  it("returns nothing from wait before the timeout, and remove abandons a request", function()
    stub:queue{ { action = "stall" }, { status = 200, body = "after" } }
    local m = curl.multi()
    local h = curl.easy()
    local id = assert(m:add(h, { url = stub:url() }))
    local t0 = now()
    assert.same({}, m:wait(0.3))
    local elapsed = now() - t0
    assert.is_true(elapsed >= 0.25 and elapsed < 1.5, "elapsed " .. elapsed)
    assert.error_matches(function() h:send{ url = stub:url() } end, "busy")
    assert.error_matches(function() m:add(h, { url = stub:url() }) end, "busy")
    assert.is_true(m:remove(id))
    assert.is_false(m:remove(id))
    assert.equals(0, m:running())
    assert.is_false(h:busy())
    assert.equals("after", assert(h:send{ url = stub:url() }).body)
    -- nothing running and no timeout: returns at once
    assert.same({}, m:wait())
    m:close()
  end)

  it("reports transport errors per request", function()
    local gone = peers.start("stub")
    local refused_url = gone:url()
    gone.stop()
    stub:queue{ { action = "stall" }, { status = 201, body = "fine" } }
    local m = curl.multi()
    local ids = {
      refused = assert(m:add(curl.easy(), { url = refused_url })),
      timeout = assert(m:add(curl.easy(), { url = stub:url("/stall"), timeout = 0.3 })),
    }
    -- let the stalled one reach the stub first so it gets the stall
    local results = {}
    for _, r in ipairs(m:wait(0.1)) do results[r.id] = r end
    ids.fine = assert(m:add(curl.easy(), { url = stub:url("/fine") }))
    local pending = {}
    for _, id in pairs(ids) do if not results[id] then pending[id] = true end end
    local more, left = drain(m, pending, 5)
    assert.equals(0, left)
    for id, r in pairs(more) do results[id] = r end
    assert.equals("ConnectionRefused", results[ids.refused].err.code)
    assert.equals("Timeout", results[ids.timeout].err.code)
    assert.equals(201, results[ids.fine].resp.status)
    -- an invalid request is refused by add itself
    local bad, err = m:add(curl.easy(), { url = stub:url(), headers = { { "X", "a\r\nb" } } })
    assert.is_nil(bad)
    assert.equals("InvalidRequest", err.code)
    assert.equals(0, m:running())
    m:close()
  end)

  it("close abandons what is in flight and frees the handles for reuse", function()
    stub:queue{ { action = "stall" }, { action = "stall" }, { status = 200, body = "reused" } }
    local m = curl.multi()
    local h1, h2 = curl.easy(), curl.easy()
    assert(m:add(h1, { url = stub:url() }))
    assert(m:add(h2, { url = stub:url() }))
    m:wait(0.1)
    -- closing a handle in flight takes it out of the multi
    h2:close()
    assert.equals(1, m:running())
    m:close()
    m:close()
    assert.is_false(h1:busy())
    assert.equals("reused", assert(h1:send{ url = stub:url() }).body)
    assert.error_matches(function() m:wait(0) end, "closed curl multi")
    h1:close()
  end)
end)

describe("option and header readers shared by the bindings (src/l_util.c)", function()
  local core = require "kinesis.core"
  local function sign_opts(extra)
    local o = { method = "POST", path = "/", region = "us-east-1", service = "kinesis",
                access_key = "AKIDEXAMPLE", secret_key = "secret", time = 1440938160,
                headers = { { "Host", "kinesis.us-east-1.amazonaws.com" }, { "X-Amz-Target", "T.Op" } } }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  it("a non-boolean option raises the same message in kinesis.curl and kinesis.core", function()
    local function message(f)
      local ok, err = pcall(f)
      assert.is_false(ok)
      return tostring(err)
    end
    assert.matches("bad option 'verify' (boolean expected, got string)",
      message(function() curl.easy{ verify = "yes" } end), 1, true)
    assert.matches("bad option 'http2' (boolean expected, got number)",
      message(function() curl.easy{ http2 = 1 } end), 1, true)
    local m, h = curl.multi(), curl.easy()
    assert.matches("bad option 'stream' (boolean expected, got number)",
      message(function() m:add(h, { url = "http://127.0.0.1:9/" }, { stream = 1 }) end), 1, true)
    m:close()
    h:close()
    assert.matches("bad option 'sign_body' (boolean expected, got string)",
      message(function() core.signer():sign(sign_opts{ sign_body = "yes" }) end), 1, true)
    -- false and nil are values, not misuse
    assert.is_table(core.signer():sign(sign_opts{ sign_body = false, debug = nil }))
  end)

  it("headers as {name, value} pairs or name = value read the same for signing", function()
    local a = assert(core.signer():sign(sign_opts()))
    local b = assert(core.signer():sign(sign_opts{
      headers = { Host = "kinesis.us-east-1.amazonaws.com", ["X-Amz-Target"] = "T.Op" } }))
    assert.equal(a.signature, b.signature)
    assert.equal("host;x-amz-date;x-amz-target", b.signed_headers)
    local ok, err = pcall(function() core.signer():sign(sign_opts{ headers = { Host = 1 } }) end)
    assert.is_false(ok)
    assert.matches("sign: bad header 'Host' (string value expected, got number)", tostring(err), 1, true)
  end)
end)
