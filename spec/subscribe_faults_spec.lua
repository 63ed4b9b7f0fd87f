-- subscribe_faults_spec.lua - what a broken or hostile SubscribeToShard
-- server can do to the client, served by the loopback stub: corrupt frames
-- (the shared negative event-stream vectors), absurd lengths, garbage,
-- streams cut by FIN or RST, stalls before and after the headers, and a
-- server that trickles bytes without ever finishing a message. Each must end
-- in one `protocol` or `transport` error, promptly, with the connection
-- released, inside kinesis.run as well as outside. Then the streaming layer
-- under it (kinesis.curl m:add{stream}, m:read): backpressure bounds what
-- sits in C buffers over HTTP/1.1 and HTTP/2; and memory stays flat over
-- 100 000 records.

local kinesis = require "kinesis"
local peers = require "support.peers"
local core = require "kinesis.core"
local curl = require "kinesis.curl"
local subscribe = require "kinesis.subscribe"

local monotime, sleep = core.monotime, core.sleep
local SHARED = os.getenv("SHARED") or (peers.root .. "/../shared")
local SYN = SHARED .. "/vectors/eventstream/kinesis-synthetic/"

local read_file = peers.read_file

local function bytes(n, seed)
  local t, x = {}, seed or 7
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    t[i] = string.char(math.floor(x / 65536) % 256)
  end
  return table.concat(t)
end

local HEADERS = {
  { name = ":message-type", type = "string", value = "event" },
  { name = ":event-type", type = "string", value = "SubscribeToShardEvent" },
  { name = ":content-type", type = "string", value = "application/json" },
}

local function frame(payload, headers)
  return core.es_encode(headers or HEADERS, payload)
end

-- A SubscribeToShardEvent with n records of `size` bytes each.
local function records_frame(n, size, seq)
  local list = {}
  local data = core.b64encode(bytes(size, n + size))
  for i = 1, n do
    list[i] = ('{"SequenceNumber":"%d","ApproximateArrivalTimestamp":1700000000.25,"Data":"%s",'
      .. '"PartitionKey":"pk-%d"}'):format(seq + i, data, i)
  end
  return frame(('{"Records":[%s],"ContinuationSequenceNumber":"%d","MillisBehindLatest":0}')
    :format(table.concat(list, ","), seq + n))
end

local GOOD = records_frame(2, 10, 100)

local function b64(list)
  local out = {}
  for i, s in ipairs(list) do out[i] = peers.b64encode(s) end
  return out
end

local CONSUMER = "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1700000000"
local PARAMS = { ConsumerARN = CONSUMER, ShardId = "shardId-000000000000",
                 StartingPosition = { Type = "TRIM_HORIZON" } }

local function status_kb()
  local f = io.open("/proc/self/status", "r")
  if not f then return {} end
  local out = {}
  for line in f:lines() do
    local k, v = line:match("^(Vm%a+):%s+(%d+) kB")
    if k then out[k] = tonumber(v) end
  end
  f:close()
  return out
end

---------------------------------------------------------------- fault table

-- name, queued response, expected kind, code (nil: any), events before it,
-- time limit in seconds. The event timeout is 0.8 s throughout.
local FAULTS = {
  { "a bad prelude CRC", { frames_b64 = b64 { GOOD, read_file(SYN .. "negative/prelude-crc-corrupt.bin") } },
    "protocol", "EventStreamError", 1, 0.5, "prelude_crc" },
  { "a bad message CRC", { frames_b64 = b64 { GOOD, read_file(SYN .. "negative/message-crc-corrupt.bin") } },
    "protocol", "EventStreamError", 1, 0.5, "message_crc" },
  { "a flipped payload bit", { frames_b64 = b64 { read_file(SYN .. "negative/payload-bitflip.bin") } },
    "protocol", "EventStreamError", 0, 0.5, "message_crc" },
  { "an altered total length", { frames_b64 = b64 { read_file(SYN .. "negative/total-length-altered.bin") } },
    "protocol", "EventStreamError", 0, 0.5 },
  { "a headers length past the message", { frames_b64 = b64 { read_file(SYN .. "negative/headers-length-too-large.bin") } },
    "protocol", "EventStreamError", 0, 0.5 },
  { "a total length under 16", { frames_b64 = b64 { read_file(SYN .. "negative/total-length-too-small.bin") } },
    "protocol", "EventStreamError", 0, 0.5 },
  { "an unknown header type", { frames_b64 = b64 { read_file(SYN .. "negative/unknown-header-type.bin") } },
    "protocol", "EventStreamError", 0, 0.5 },
  { "a header value past its block", { frames_b64 = b64 { read_file(SYN .. "negative/header-value-overrun.bin") } },
    "protocol", "EventStreamError", 0, 0.5 },
  -- a valid prelude announcing 2 GiB, then a flood that never ends: refused
  -- at the prelude, nothing allocated for it, no waiting for the rest
  { "an absurd length followed by an endless flood",
    { frames_b64 = b64 { read_file(SYN .. "negative/huge-total-length.bin"), bytes(65536, 3) }, ["repeat"] = 100000 },
    "protocol", "EventStreamError", 0, 1, "too_large" },
  { "garbage instead of frames", { frames_b64 = b64 { bytes(1024 * 1024, 11) } },
    "protocol", "EventStreamError", 0, 1 },
  { "a frame truncated by a clean end of the body",
    { frames_b64 = b64 { GOOD, read_file(SYN .. "negative/truncated-message.bin") } },
    "protocol", "EventStreamError", 1, 0.5, "ended mid%-message" },
  { "one good message and 20 bytes of the next", { frames_b64 = b64 { read_file(SYN .. "negative/trailing-partial-message.bin") } },
    "protocol", "EventStreamError", 1, 0.5 },
  { "a body cut by FIN mid-frame",
    { frames_b64 = b64 { GOOD, GOOD:sub(1, 30) }, ["end"] = "close" },
    "transport", "ConnectionReset", 1, 0.5 },
  { "a body cut by RST", { frames_b64 = b64 { GOOD }, frame_delay_ms = 200, ["end"] = "reset" },
    "transport", nil, 1, 0.5 },
  { "a stall after the headers", { frames_b64 = b64 { GOOD }, stall_after = 0 },
    "transport", "Timeout", 0, 1.6 },
  { "a stall after one event", { frames_b64 = b64 { GOOD, GOOD }, stall_after = 1 },
    "transport", "Timeout", 1, 1.6 },
  { "a stall mid-frame", { frames_b64 = b64 { GOOD .. GOOD }, chunk_bytes = #GOOD + 9, stall_after = 1 },
    "transport", "Timeout", 1, 1.6 },
  -- bytes keep coming, one every 100 ms, but no message ever completes: the
  -- timeout is per message, not per byte
  { "a server trickling a frame byte by byte", { frames_b64 = b64 { GOOD }, chunk_bytes = 1, frame_delay_ms = 100 },
    "transport", "Timeout", 0, 1.6 },
  { "a stall before the headers", { action = "stall" },
    "transport", "Timeout", 0, 1.6 },
  { "a payload that is not JSON", { frames_b64 = b64 { frame("{not json") } },
    "protocol", "InvalidEventPayload", 0, 0.5 },
  { "a payload of the wrong shape", { frames_b64 = b64 { frame('{"Records":5,"ContinuationSequenceNumber":"1"}') } },
    "protocol", "InvalidEventPayload", 0, 0.5 },
  { "an unknown :message-type", { frames_b64 = b64 { frame("{}", { { name = ":message-type", type = "string", value = "gossip" } }) } },
    "protocol", "InvalidMessageType", 0, 0.5 },
}

describe("SubscribeToShard against a faulty server", function()
  local stub, c

  lazy_setup(function()
    stub = peers.start("stub")
    c = peers.client(stub, { timeout = { event = 0.8 } })
  end)
  lazy_teardown(function()
    if c then c:close() end
    if stub then stub.stop() end
  end)
  before_each(function() stub:reset() end)

  local function released()
    local deadline = monotime() + 3
    repeat
      if stub:stats().in_flight == 0 then return true end
      sleep(0.05)
    until monotime() > deadline
    return false
  end

  local function drain(sub)
    local events, err, calls = 0, nil, 0
    for event, e in sub do
      calls = calls + 1
      if event then events = events + 1 else err = e end
      assert.is_true(calls < 10000, "the iterator does not end")
    end
    return events, err, calls
  end

  it("keeps the credentials out of an in-stream exception's message", function()
    local secret, token = "s3cr3t-key-in-echo", "t0ken-in-echo"
    local c2 = peers.client(stub, {
      credentials = { access_key_id = "AKIDECHO", secret_access_key = secret, session_token = token },
      timeout = { event = 0.8 } })
    local exception = core.es_encode({
      { name = ":message-type", type = "string", value = "exception" },
      { name = ":exception-type", type = "string", value = "InternalFailureException" },
      { name = ":content-type", type = "string", value = "application/json" },
    }, '{"message":"request was x-amz-security-token:' .. token .. ' signed with ' .. secret .. '"}')
    stub:queue { { status = 200, headers = { ["Content-Type"] = "application/vnd.amazon.eventstream" },
      frames_b64 = { core.b64encode(exception) } } }
    local _, err = drain(c2:subscribe_to_shard { ConsumerARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1",
      ShardId = "shardId-000000000000", StartingPosition = { Type = "LATEST" } })
    c2:close()
    assert.equal("InternalFailureException", err.code)
    assert.is_true(err.in_stream)
    assert.is_nil(err.message:find(secret, 1, true))
    assert.is_nil(err.message:find(token, 1, true))
    assert.is_nil(tostring(err):find(token, 1, true))
  end)

  local function check(case, events, err, calls, elapsed)
    local name, _, kind, code, before, limit, detail = table.unpack(case)
    assert.is_table(err, name .. ": no error")
    assert.equal(kind, err.kind, name .. ": " .. tostring(err))
    if code then assert.equal(code, err.code, name .. ": " .. tostring(err)) end
    if detail then assert.matches(detail, err.message, 1, false) end
    assert.equal("SubscribeToShard", err.op)
    assert.equal(before, events, name)
    assert.equal(before + 1, calls, name .. ": the error comes once, then the iterator ends")
    assert.is_true(elapsed < limit, ("%s: took %.2f s"):format(name, elapsed))
  end

  for _, case in ipairs(FAULTS) do
    it("ends with one error on " .. case[1], function()
      stub:queue { case[2] }
      local t0 = monotime()
      local events, err, calls = drain(c:subscribe_to_shard(PARAMS))
      check(case, events, err, calls, monotime() - t0)
      assert.is_true(released(), case[1] .. ": connection still open")
    end)
  end

  it("ends every fault inside kinesis.run too", function()
    for _, case in ipairs(FAULTS) do
      stub:queue { case[2] }
      local events, err, calls, elapsed = kinesis.run(function()
        local t0 = monotime()
        local e, r, n = drain(c:subscribe_to_shard(PARAMS))
        return e, r, n, monotime() - t0
      end)
      check(case, events, err, calls, elapsed)
      assert.is_true(released(), case[1] .. ": connection still open")
    end
  end)

  it("lets other tasks run while subscriptions stall, and times them out together", function()
    local q = {}
    for i = 1, 4 do q[i] = { frames_b64 = b64 { GOOD }, stall_after = 1 } end
    stub:queue(q)
    local ticks = 0
    local t0 = monotime()
    local results = kinesis.run(function()
      local tasks = {}
      for i = 1, 4 do
        tasks[i] = kinesis.spawn(function()
          local events, err = drain(c:subscribe_to_shard(PARAMS))
          return events, err.code
        end)
      end
      kinesis.spawn(function()
        for _ = 1, 5 do
          kinesis.sleep(0.1)
          ticks = ticks + 1
        end
      end)
      return kinesis.wait_all(tasks)
    end)
    local elapsed = monotime() - t0
    for _, r in ipairs(results) do
      assert.is_true(r[1])
      assert.equal(1, r[2])
      assert.equal("Timeout", r[3])
    end
    assert.equal(5, ticks)
    assert.is_true(elapsed < 1.8, "four 0.8 s timeouts took " .. elapsed .. " s")
    assert.is_true(released())
  end)

  it("reports a refused connection as a transport error", function()
    local dead = peers.client({ endpoint = "http://127.0.0.1:1" })
    local events, err, calls = drain(dead:subscribe_to_shard(PARAMS))
    assert.equal(0, events)
    assert.equal(1, calls)
    assert.equal("transport", err.kind)
    assert.equal("ConnectionRefused", err.code)
    dead:close()
  end)

  it("refuses a transport that cannot stream", function()
    local plain = peers.client(stub, {
      transport = { name = "custom", send = function() error("not used") end } })
    local _, err, calls = drain(plain:subscribe_to_shard(PARAMS))
    assert.equal(1, calls)
    assert.equal("StreamingNotSupported", err.code)
    assert.equal(0, #stub:requests())
  end)

  it("allocates nothing for an absurd length and keeps no flood in memory", function()
    collectgarbage("collect")
    local heap0, vm0 = collectgarbage("count"), status_kb().VmHWM
    local flood = { frames_b64 = b64 { read_file(SYN .. "negative/huge-total-length.bin"), bytes(65536, 5) },
                    ["repeat"] = 100000 }
    for _ = 1, 5 do
      stub:queue { flood }
      local _, err = drain(c:subscribe_to_shard(PARAMS))
      assert.equal("protocol", err.kind)
    end
    collectgarbage("collect")
    local heap1, vm1 = collectgarbage("count"), status_kb().VmHWM
    assert.is_true(heap1 - heap0 < 1024, ("Lua heap grew by %.0f KiB"):format(heap1 - heap0))
    if vm0 and vm1 then
      assert.is_true(vm1 - vm0 < 64 * 1024, ("peak RSS grew by %.0f KiB"):format(vm1 - vm0))
    end
    assert.is_true(released())
  end)
end)

---------------------------------------------------------------- streaming layer

describe("kinesis.curl streaming (m:add with stream = true, m:read)", function()
  local stub

  lazy_setup(function()
    -- --h2: the stub's TLS port also speaks HTTP/2
    stub = peers.start("stub", { tls = true, args = { "--h2", "1" } })
  end)
  lazy_teardown(function()
    if stub then stub.stop() end
  end)
  before_each(function() stub:reset() end)

  -- 64 distinct 8 KiB pieces, sent 40 times over: 20 MiB in all
  local PIECES = {}
  for i = 1, 64 do PIECES[i] = bytes(8192, i) end

  -- Streams PIECES x repeat from url; never reads for `idle` s first. Returns
  -- the bytes, the largest single read, the head and the number of reads.
  local function fetch(url, opts)
    stub:queue { { frames_b64 = b64(PIECES), ["repeat"] = opts.rep or 40,
                   headers = { ["x-amzn-RequestId"] = "rid-stream" } } }
    local m = curl.multi()
    local h = curl.easy { verify = false, timeout = 1 }   -- a stream ignores the request timeout
    local id = assert(m:add(h, { url = url .. "/", body = "{}" }, { stream = true, buffer = opts.buffer }))
    local t0 = monotime()
    while monotime() - t0 < (opts.idle or 0) do m:wait(0.05) end
    local parts, biggest, head, reads = {}, 0, nil, 0
    while true do
      local r = m:read(id)
      assert.is_table(r)
      reads = reads + 1
      if r.head then
        assert.is_nil(head)                    -- handed out once
        head = r.head
      end
      if r.data then
        parts[#parts + 1] = r.data
        if #r.data > biggest then biggest = #r.data end
      end
      assert.is_nil(r.err)
      if r.done then break end
      for _, ev in ipairs(assert(m:wait(5))) do
        assert.equal(id, ev.id)
        assert.is_true(ev.stream)
        assert.is_nil(ev.resp)
      end
    end
    assert.is_nil(m:read(id))                  -- released after the end
    assert.is_false(h:busy())
    m:close()
    h:close()
    return table.concat(parts), biggest, head, reads
  end

  local function expected(rep)
    local all = table.concat(PIECES)
    return all:rep(rep or 40)
  end

  it("hands out a 20 MiB HTTP/1.1 body intact, holding at most the bound while nobody reads", function()
    local body, biggest, head = fetch(stub.endpoint, { buffer = 16384, idle = 0.5 })
    assert.equal(#expected(), #body)
    assert.is_true(body == expected())
    assert.equal(200, head.status)
    assert.equal("1.1", head.http_version)
    assert.equal("rid-stream", head.request_id)
    assert.is_nil(head.body)
    -- the bound plus at most one curl write
    assert.is_true(biggest <= 16384 + 65536, "one read returned " .. biggest .. " bytes")
  end)

  it("does the same over HTTP/2 (pausing one h2 stream)", function()
    -- Debian's libcurl4-openssl-dev is built with nghttp2
    assert.is_true(curl.http2, "libcurl was built without HTTP/2")
    local body, biggest, head = fetch(stub.tls_endpoint, { buffer = 16384, idle = 0.5, rep = 10 })
    assert.is_true(body == expected(10))
    assert.equal("2", head.http_version)
    assert.is_true(biggest <= 16384 + 65536, "one read returned " .. biggest .. " bytes")
  end)

  it("a paused HTTP/2 stream does not hold up another on the same connection", function()
    -- Debian's libcurl4-openssl-dev is built with nghttp2
    assert.is_true(curl.http2, "libcurl was built without HTTP/2")
    stub:queue { { frames_b64 = b64 { PIECES[1] }, ["repeat"] = 2000 },
                 { frames_b64 = b64 { PIECES[2] }, ["repeat"] = 1000 } }
    local m = curl.multi()
    local h1, h2 = curl.easy { verify = false }, curl.easy { verify = false }
    local idle = assert(m:add(h1, { url = stub.tls_endpoint .. "/", body = "{}" }, { stream = true, buffer = 16384 }))
    local busy = assert(m:add(h2, { url = stub.tls_endpoint .. "/", body = "{}" }, { stream = true, buffer = 16384 }))
    local total, done, t0 = 0, false, monotime()
    while not done and monotime() - t0 < 20 do
      m:wait(0.5)
      local r = m:read(busy)
      if r.data then total = total + #r.data end
      assert.is_nil(r.err)
      done = r.done == true
    end
    assert.is_true(done)
    assert.equal(8192 * 1000, total)
    local r = m:read(idle)
    assert.equal("2", r.head.http_version)
    assert.is_true(#r.data <= 16384 + 65536)
    local reqs = stub:requests()
    assert.equal(2, #reqs)
    assert.equal(reqs[1].conn, reqs[2].conn)   -- one connection, two h2 streams
    m:close()
    h1:close()
    h2:close()
  end)

  it("without reading, a paused stream stops the server writing (backpressure reaches the socket)", function()
    -- (node's HTTP/2 server does not always count an h2 stream that was
    -- reset while blocked on its window as finished: start from the count)
    local base = stub:stats().in_flight
    stub:queue { { frames_b64 = b64(PIECES), ["repeat"] = 2000 } }     -- 1 GiB if nobody stopped it
    local m = curl.multi()
    local h = curl.easy()
    local id = assert(m:add(h, { url = stub.endpoint .. "/", body = "{}" }, { stream = true, buffer = 65536 }))
    for _ = 1, 20 do m:wait(0.05) end
    local r = m:read(id)
    assert.is_true(#r.data <= 65536 + 65536)
    -- the stub is stuck in a full socket: the request is still in flight
    assert.equal(base + 1, stub:stats().in_flight)
    assert.equal(1, stub:stats().total)
    assert.is_true(m:remove(id))
    assert.is_nil(m:read(id))
    m:close()
    h:close()
  end)

  it("delivers an error status with its body as data, then done", function()
    stub:queue { { status = 400, body = '{"__type":"ResourceNotFoundException"}' } }
    local m = curl.multi()
    local h = curl.easy()
    local id = assert(m:add(h, { url = stub.endpoint .. "/", body = "{}" }, { stream = true }))
    local head, data, done = nil, {}, false
    for _ = 1, 100 do
      local r = m:read(id)
      if r.head then head = r.head end
      if r.data then data[#data + 1] = r.data end
      if r.done then done = true break end
      m:wait(1)
    end
    assert.is_true(done)
    assert.equal(400, head.status)
    assert.equal('{"__type":"ResourceNotFoundException"}', table.concat(data))
    m:close()
    h:close()
  end)

  it("reports a transfer that fails mid-stream as err after its data", function()
    stub:queue { { frames_b64 = b64 { "abc", "def" }, ["end"] = "close" } }
    local m = curl.multi()
    local h = curl.easy()
    local id = assert(m:add(h, { url = stub.endpoint .. "/", body = "{}" }, { stream = true }))
    local data, err = {}, nil
    for _ = 1, 100 do
      local r = m:read(id)
      if r.data then data[#data + 1] = r.data end
      if r.err then err = r.err break end
      assert.is_nil(r.done)
      m:wait(1)
    end
    assert.equal("abcdef", table.concat(data))
    assert.equal("ConnectionReset", err.code)
    assert.is_false(h:busy())
    m:close()
    h:close()
  end)

  it("keeps ordinary requests and streams apart in one multi", function()
    stub:queue { { status = 200, body = "plain", delay_ms = 50 } }
    stub:queue { { frames_b64 = b64 { "s1", "s2" }, frame_delay_ms = 100 } }
    local m = curl.multi()
    local h1, h2 = curl.easy(), curl.easy()
    local plain = assert(m:add(h1, { url = stub.endpoint .. "/" }))
    local st = assert(m:add(h2, { url = stub.endpoint .. "/", body = "{}" }, { stream = true }))
    assert.is_nil(m:read(plain))               -- not a stream: nothing to read
    local got_plain, got = nil, {}
    local t0 = monotime()
    while (not got_plain or #got == 0 or got[#got] ~= "end") and monotime() - t0 < 5 do
      for _, ev in ipairs(m:wait(1)) do
        if ev.id == plain then
          assert.is_nil(ev.stream)
          got_plain = ev.resp.body
        else
          assert.equal(st, ev.id)
          assert.is_true(ev.stream)
          local r = m:read(st)
          if r.data then got[#got + 1] = r.data end
          if r.done then got[#got + 1] = "end" end
        end
      end
    end
    assert.equal("plain", got_plain)
    assert.equal("s1s2end", table.concat(got))
    m:close()
    h1:close()
    h2:close()
  end)

  it("raises on misuse", function()
    local m = curl.multi()
    local h = curl.easy()
    assert.has_error(function() m:add(h, { url = stub.endpoint }, { streaming = true }) end)
    assert.has_error(function() m:add(h, { url = stub.endpoint }, { stream = true, buffer = 0 }) end)
    assert.has_error(function() m:add(h, { url = stub.endpoint }, { stream = "yes" }) end)
    assert.has_error(function() m:read("x") end)
    assert.is_nil(m:read(12345))
    m:close()
    assert.has_error(function() m:read(1) end)
    h:close()
  end)
end)

---------------------------------------------------------------- memory

describe("memory over a long subscription", function()
  local stub, c

  lazy_setup(function()
    stub = peers.start("stub")
    c = peers.client(stub)
  end)
  lazy_teardown(function()
    if c then c:close() end
    if stub then stub.stop() end
  end)

  -- records of 200 bytes, 10 per event, streamed as fast as they are read;
  -- the heap is measured after full collections at every tenth of the way
  local function run(records_wanted, within_run)
    local per = 10
    stub:queue { { frames_b64 = b64 { records_frame(per, 200, 0), records_frame(per, 200, per) },
                   ["repeat"] = records_wanted / per / 2 } }
    local function body()
      local n, heaps = 0, {}
      collectgarbage("collect")
      local sub = c:subscribe_to_shard(PARAMS)
      for event, err in sub do
        assert(event, tostring(err))
        n = n + #event.Records
        assert.equal(200, #event.Records[1].Data)
        if n % (records_wanted / 10) == 0 then
          collectgarbage("collect")
          heaps[#heaps + 1] = collectgarbage("count")
        end
      end
      return n, heaps, sub
    end
    if within_run then return kinesis.run(body) end
    return body()
  end

  local function check_flat(heaps, label)
    local text = {}
    for i, k in ipairs(heaps) do text[i] = ("%.0f"):format(k) end
    text = label .. ": heap KiB at each tenth: " .. table.concat(text, " ")
    assert.equal(10, #heaps, text)
    for i = 2, 10 do
      assert.is_true(heaps[i] < 2 * heaps[1], text)
    end
    -- and no creeping: the last tenth is not above the second by much
    assert.is_true(heaps[10] < heaps[2] + 512, text)
  end

  it("keeps the Lua heap flat through 100 000 records", function()
    local n, heaps, sub = run(100000)
    assert.equal(100000, n)
    assert.is_true(sub.finished)
    check_flat(heaps, "100k records")
  end)

  it("keeps it flat inside kinesis.run too", function()
    local n, heaps = run(50000, true)
    assert.equal(50000, n)
    check_flat(heaps, "50k records in kinesis.run")
  end)
end)
