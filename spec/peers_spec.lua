-- peers_spec.lua - the test harness itself (spec/support): launch.js starts
-- each server on free loopback ports with its options passed through, stop()
-- really stops it, a crashed test run leaves nothing behind, and the stub
-- does what its control endpoints promise. Uses the curl CLI, not the client
-- (but for peers.client, which makes one).
local peers = require "support.peers"
local cjson = require "cjson"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- curl CLI call; returns HTTP status (0 when no connection) and body.
local function cli(url, args)
  local p = io.popen("curl -s --noproxy '*' --max-time 10 -w '\\n%{http_code}' "
    .. (args or "") .. " " .. shell_quote(url) .. " 2>/dev/null")
  local out = p:read("*a")
  p:close()
  local body, code = out:match("^(.*)\n(%d%d%d)$")
  return tonumber(code) or 0, body
end

local KINESIS_HEADERS = "-H 'Content-Type: application/x-amz-json-1.1' "
  .. "-H 'X-Amz-Date: 20260101T000000Z' "
  .. "-H 'Authorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/"
  .. "kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=00' "

local function kinesis_cli(endpoint, target, body)
  local status, text = cli(endpoint .. "/", KINESIS_HEADERS
    .. "-H 'X-Amz-Target: Kinesis_20131202." .. target .. "' --data-binary "
    .. shell_quote(body))
  return status, text and text ~= "" and cjson.decode(text) or nil
end

describe("spec/support/peers", function()
  it("exports the test credentials and region", function()
    assert.same({ access_key_id = "AKIDTEST", secret_access_key = "secret" }, peers.credentials)
    assert.equals("us-east-1", peers.region)
  end)

  it("starts kinesalite with its options, and stop() stops it", function()
    local srv = peers.start("kinesalite", { shard_limit = 3 })
    assert.matches("^http://127%.0%.0%.1:%d+$", srv.endpoint)
    assert.is_true(peers.alive(srv.pid))
    local status, out = kinesis_cli(srv.endpoint, "CreateStream", '{"StreamName":"s","ShardCount":5}')
    assert.equals(400, status)
    assert.equals("LimitExceededException", out.__type)
    assert.matches("Limit: 3%.", out.message)
    assert.is_true(srv.stop())
    assert.is_false(peers.alive(srv.pid))
    assert.equals(0, (cli(srv.endpoint .. "/")))   -- nothing listens any more
    assert.is_true(srv.stop())                     -- idempotent
  end)

  it("starts kinesis-local with extra environment, plain and TLS ports", function()
    local srv = peers.start("kinesis-local", { env = { SHARD_LIMIT = "2" } })
    finally(function() srv.stop() end)
    assert.matches("^https://127%.0%.0%.1:%d+$", srv.tls_endpoint)
    local status, out = kinesis_cli(srv.endpoint, "CreateStream", '{"StreamName":"s","ShardCount":5}')
    assert.equals(400, status)
    assert.equals("LimitExceededException", out.__type)
    assert.matches("limit of 2", out.message)
    assert.equals(200, (cli(srv.tls_endpoint .. "/", "-k -o /dev/null " .. KINESIS_HEADERS
      .. "-H 'X-Amz-Target: Kinesis_20131202.ListStreams' -d '{}'")))
  end)

  it("makes a client with the test region and credentials, extra options on top", function()
    local sent = {}
    local recorder = { send = function(_, req)
      sent[#sent + 1] = req
      return { status = 200, headers = {}, body = '{"StreamNames":[],"HasMoreStreams":false}' }
    end }
    local c = peers.client({ endpoint = "http://127.0.0.1:9" }, { transport = recorder })
    assert(c:list_streams {})
    local c2 = peers.client({ endpoint = "http://127.0.0.1:9" }, { transport = recorder, region = "eu-west-1" })
    assert(c2:list_streams {})
    local function auth(req)
      for _, h in ipairs(req.headers) do
        if h[1]:lower() == "authorization" then return h[2] end
      end
    end
    assert.equals("http://127.0.0.1:9/", sent[1].url)
    assert.matches("Credential=AKIDTEST/%d+/us%-east%-1/kinesis/", auth(sent[1]))
    assert.matches("Credential=AKIDTEST/%d+/eu%-west%-1/kinesis/", auth(sent[2]))
    assert.error_matches(function()
      peers.client({ endpoint = "http://127.0.0.1:9" }, { retry = { mode = "sometimes" } })
    end, "peers.client: .*retry")
  end)

  it("reads a whole file, binary bytes included", function()
    local bytes = "\0\1\255\r\n\26 end"
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, "wb"))
    f:write(bytes)
    f:close()
    local got = peers.read_file(tmp)
    os.remove(tmp)
    assert.is_true(got == bytes)
    assert.has_error(function() peers.read_file(tmp) end)
  end)

  it("raises with a useful message for an unknown server", function()
    assert.error_matches(function() peers.start("no-such-server") end, "unknown server")
  end)

  it("stops the server when the Lua process that started it dies without stopping it", function()
    local p = io.popen("lua5.4 -e " .. shell_quote(
      'local s = require("support.peers").start("stub"); print(s.pid)'))
    local pid = tonumber(p:read("*l"))
    p:close()
    assert.is_number(pid)
    local gone = false
    for _ = 1, 50 do
      if not peers.alive(pid) then gone = true break end
      os.execute("sleep 0.1")
    end
    assert.is_true(gone, "stub " .. pid .. " outlived its parent")
  end)

  describe("the stub", function()
    local stub

    lazy_setup(function()
      stub = peers.start("stub")
    end)

    lazy_teardown(function()
      stub.stop()
    end)

    before_each(function()
      stub:reset()
    end)

    it("answers 500 StubNoResponseQueued when nothing is queued", function()
      local status, body = cli(stub:url("/x"))
      assert.equals(500, status)
      assert.equals('{"__type":"StubNoResponseQueued"}', body)
    end)

    it("answers from the queue in order and records requests, not control calls", function()
      assert.equals(2, stub:queue{ { status = 201, body = "first", headers = { ["X-A"] = "1" } },
                                   { status = 202, body = "second" } })
      local status, body = cli(stub:url("/one"), "-X PUT -H 'X-Test: yes' --data-binary 'hello'")
      assert.equals(201, status)
      assert.equals("first", body)
      status, body = cli(stub:url("/two"))
      assert.equals(202, status)
      assert.equals("second", body)
      local seen = stub:requests()
      assert.equals(2, #seen)
      assert.equals("PUT", seen[1].method)
      assert.equals("/one", seen[1].path)
      assert.equals("yes", seen[1].headers["x-test"])
      assert.equals("hello", seen[1].body)
      assert.equals("hello", seen[1].raw)
      assert.equals("GET", seen[2].method)
      local stats = stub:stats()
      assert.equals(2, stats.total)
      assert.equals(0, stats.queued)
    end)

    it("carries binary bodies as base64 both ways", function()
      local bytes = "\0\1\2\255\254\128 binary"
      stub:queue{ { status = 200, body = bytes } }
      local tmp = os.tmpname()
      local f = assert(io.open(tmp, "wb"))
      f:write(bytes)
      f:close()
      local p = io.popen("curl -s --noproxy '*' --data-binary @" .. tmp .. " " .. stub:url())
      local got = p:read("*a")
      p:close()
      os.remove(tmp)
      assert.is_true(got == bytes)
      local seen = stub:requests()[1]
      assert.is_nil(seen.body)                 -- not UTF-8
      assert.is_true(seen.raw == bytes)
      assert.equals(#bytes, seen.body_length)
    end)

    it("delays answers and counts concurrent requests", function()
      stub:queue{ { status = 200, delay_ms = 300 }, { status = 200, delay_ms = 300 },
                  { status = 200, delay_ms = 300 } }
      local p = io.popen("for i in 1 2 3; do curl -s --noproxy '*' -o /dev/null "
        .. stub:url() .. " & done; wait")
      p:read("*a")
      p:close()
      local stats = stub:stats()
      assert.equals(3, stats.total)
      assert.equals(3, stats.max_in_flight)
      assert.equals(0, stats.in_flight)
    end)

    it("resets its queue and log", function()
      stub:queue{ { status = 200 }, { status = 200 } }
      cli(stub:url())
      stub:reset()
      assert.same({}, stub:requests())
      local stats = stub:stats()
      assert.equals(0, stats.total)
      assert.equals(0, stats.queued)
    end)

    it("scripts broken answers: reset, close after headers, truncate, stall", function()
      stub:queue{ { action = "reset" }, { action = "close_after_headers" },
                  { action = "truncate", body = "abc" }, { action = "stall" } }
      local function exit_code(extra)
        return select(3, os.execute("curl -s --noproxy '*' -o /dev/null " .. (extra or "")
          .. " " .. stub:url()))
      end
      local first = exit_code()
      assert.is_true(first == 52 or first == 56, "curl exit " .. tostring(first))  -- empty reply / recv error
      assert.equals(18, exit_code())                          -- partial file
      assert.equals(18, exit_code())
      assert.equals(28, exit_code("--max-time 0.5"))          -- timed out
      assert.equals(4, #stub:requests())
    end)
  end)
end)
