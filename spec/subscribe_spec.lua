-- subscribe_spec.lua - enhanced fan-out (issue 6): client:subscribe_to_shard
-- and client:subscribe against kinesis-local (its plain port streams over
-- chunked HTTP/1.1, its TLS port over HTTP/2), and against the loopback stub
-- replaying the shared event-stream vectors, including what the AWS SDK for
-- JavaScript yields for the same bytes (vectors/eventstream/sdk-replay).

local kinesis = require "kinesis"
local peers = require "support.peers"
local core = require "kinesis.core"
local cjson = require "cjson"

local monotime, sleep = core.monotime, core.sleep
local SHARED = os.getenv("SHARED") or (peers.root .. "/../shared")
local VECTORS = SHARED .. "/vectors/eventstream/"

local read_file = peers.read_file

local function vector(name)
  return read_file(VECTORS .. name)
end

-- Deterministic bytes covering every value (a small LCG, no randomness).
local function bytes(n, seed)
  local t, x = {}, seed or 1
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    t[i] = string.char(x % 256)
  end
  return table.concat(t)
end

local function all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return table.concat(t)
end

-- Epoch seconds of an ISO-8601 UTC time (days from the civil date).
local function iso_seconds(s)
  local y, m, d, hh, mm, ss, frac = s:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)Z$")
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
    + (frac ~= "" and tonumber("0." .. frac) or 0)
end

local HEADERS = {
  { name = ":message-type", type = "string", value = "event" },
  { name = ":event-type", type = "string", value = "SubscribeToShardEvent" },
  { name = ":content-type", type = "string", value = "application/json" },
}

-- One SubscribeToShardEvent frame; records are { seq, data, key }.
local function event_frame(cont, records, extra)
  local list = {}
  for i, r in ipairs(records or {}) do
    list[i] = string.format('{"SequenceNumber":"%s","ApproximateArrivalTimestamp":%s,"Data":"%s",'
      .. '"PartitionKey":"%s"}', r[1], r[4] or "1700000000.5", core.b64encode(r[2]), r[3] or "k")
  end
  local body = string.format('{"Records":[%s],"ContinuationSequenceNumber":%s,"MillisBehindLatest":0%s}',
    table.concat(list, ","), cont and ('"' .. cont .. '"') or "null", extra or "")
  return core.es_encode(HEADERS, body)
end

local function b64list(frames)
  local out = {}
  for i, f in ipairs(frames) do out[i] = peers.b64encode(f) end
  return out
end

local CONSUMER = "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1700000000"
local function params(extra)
  local p = { ConsumerARN = CONSUMER, ShardId = "shardId-000000000000",
              StartingPosition = { Type = "TRIM_HORIZON" } }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

---------------------------------------------------------------- kinesis-local

describe("subscribe_to_shard against kinesis-local", function()
  local srv, c, c2
  local ARN                      -- the 1-shard stream
  local RECORDS, PUT             -- what was written, and PutRecords' answer
  local consumers = 0

  local function wait_active(name)
    for _ = 1, 200 do
      local out = assert(c:describe_stream_summary { StreamName = name })
      if out.StreamDescriptionSummary.StreamStatus == "ACTIVE" then return out.StreamDescriptionSummary end
      sleep(0.05)
    end
    error("stream " .. name .. " never became ACTIVE")
  end

  -- A fresh consumer per test: kinesis-local, like the service, allows one
  -- subscription per consumer and shard, and lets go of a closed one only
  -- when its next heartbeat finds the connection gone.
  local function consumer(stream_arn)
    consumers = consumers + 1
    local out = assert(c:register_stream_consumer { StreamARN = stream_arn, ConsumerName = "c" .. consumers })
    assert(c:wait("consumer_active", { ConsumerARN = out.Consumer.ConsumerARN }, { delay = 0.1, timeout = 20 }))
    return out.Consumer.ConsumerARN
  end

  -- Reads until `want` records came (or `seconds` pass); returns records,
  -- events and the subscription (closed).
  local function collect(client, p, want, seconds)
    local sub = client:subscribe_to_shard(p)
    local records, events = {}, {}
    local deadline = monotime() + (seconds or 20)
    for event, err in sub do
      assert(event, tostring(err))
      events[#events + 1] = event
      for _, r in ipairs(event.Records) do records[#records + 1] = r end
      if #records >= want or monotime() > deadline then break end
    end
    sub:close()
    return records, events, sub
  end

  local function assert_same_records(expected, put, got)
    assert.equal(#expected, #got)
    for i, r in ipairs(got) do
      assert.equal(expected[i].PartitionKey, r.PartitionKey, "record " .. i)
      assert.equal(#expected[i].Data, #r.Data, "record " .. i)
      assert.is_true(expected[i].Data == r.Data, "record " .. i .. " differs")
      assert.equal(put[i].SequenceNumber, r.SequenceNumber)
      assert.equal("number", type(r.ApproximateArrivalTimestamp))
      assert.is_true(math.abs(r.ApproximateArrivalTimestamp - os.time()) < 600)
    end
  end

  lazy_setup(function()
    local fast = "100ms"
    srv = peers.start("kinesis-local", { env = {
      CREATE_STREAM_DURATION = fast, DELETE_STREAM_DURATION = fast,
      REGISTER_STREAM_CONSUMER_DURATION = fast, DEREGISTER_STREAM_CONSUMER_DURATION = fast,
    } })
    c = peers.client(srv)
    -- the TLS port: kinesis-local's certificate names no host, so this
    -- client turns verification off explicitly
    c2 = peers.client(srv, { endpoint = srv.tls_endpoint, verify = false })
    assert(c:create_stream { StreamName = "efo", ShardCount = 1 })
    ARN = wait_active("efo").StreamARN
    RECORDS = {
      { PartitionKey = "ascii", Data = "hello kinesis" },
      { PartitionKey = "every-byte", Data = all_bytes() },
      { PartitionKey = "nul", Data = "\0" },
      { PartitionKey = "high", Data = string.rep("\255\254\128", 300) },
      { PartitionKey = "utf8-ключ", Data = "данные 🚀" },
    }
    for i = 1, 45 do
      RECORDS[#RECORDS + 1] = { PartitionKey = "p" .. i, Data = bytes(1 + (i * 37) % 3000, i) }
    end
    PUT = assert(c:put_records { StreamName = "efo", Records = RECORDS })
    assert.equal(0, PUT.FailedRecordCount)
    PUT = PUT.Records
  end)

  lazy_teardown(function()
    if c then c:close() end
    if c2 then c2:close() end
    if srv then srv.stop() end
  end)

  it("streams every record byte-exact from TRIM_HORIZON over chunked HTTP/1.1", function()
    local arn = consumer(ARN)
    local records, events, sub = collect(c, { ConsumerARN = arn, ShardId = "shardId-000000000000",
      StartingPosition = { Type = "TRIM_HORIZON" } }, #RECORDS)
    assert_same_records(RECORDS, PUT, records)
    assert.equal("1.1", sub.response.http_version)
    assert.equal(200, sub.response.status)
    assert.equal("application/vnd.amazon.eventstream", sub.response.headers["content-type"])
    local last = events[#events]
    assert.equal(PUT[#PUT].SequenceNumber, last.ContinuationSequenceNumber)
    assert.equal("integer", math.type(last.MillisBehindLatest))
    assert.is_nil(last.ChildShards)          -- kinesis-local sends null: absent
    assert.is_true(sub.closed)
  end)

  it("streams every record byte-exact over HTTP/2 on the TLS port (verification off)", function()
    local arn = consumer(ARN)
    local records, _, sub = collect(c2, { ConsumerARN = arn, ShardId = "shardId-000000000000",
      StartingPosition = { Type = "TRIM_HORIZON" } }, #RECORDS)
    assert_same_records(RECORDS, PUT, records)
    assert.equal(require("kinesis.curl").http2 and "2" or "1.1", sub.response.http_version)
  end)

  it("fails TLS verification on that port when verification stays on", function()
    local strict = peers.client(srv, { endpoint = srv.tls_endpoint })
    local sub = strict:subscribe_to_shard { ConsumerARN = ARN .. "/consumer/x:1", ShardId = "shardId-000000000000",
      StartingPosition = { Type = "LATEST" } }
    local ok, err = sub()
    assert.is_false(ok)
    assert.equal("transport", err.kind)
    assert.equal("TLS", err.code)
    strict:close()
  end)

  it("resumes after a ContinuationSequenceNumber with no gap and no duplicate", function()
    local arn = consumer(ARN)
    local _, events = collect(c, { ConsumerARN = arn, ShardId = "shardId-000000000000",
      StartingPosition = { Type = "TRIM_HORIZON" } }, #RECORDS)
    local cont = events[#events].ContinuationSequenceNumber
    assert.equal(PUT[#PUT].SequenceNumber, cont)

    local more = {}
    for i = 1, 30 do more[i] = { PartitionKey = "more" .. i, Data = bytes(100 + i, 1000 + i) } end
    local put = assert(c:put_records { StreamName = "efo", Records = more }).Records

    -- a second consumer (the first may still hold its subscription for a
    -- heartbeat) reads on from the continuation point
    local arn2 = consumer(ARN)
    local records = collect(c, { ConsumerARN = arn2, ShardId = "shardId-000000000000",
      StartingPosition = { Type = "AFTER_SEQUENCE_NUMBER", SequenceNumber = cont } }, #more)
    assert_same_records(more, put, records)

    -- and AT_SEQUENCE_NUMBER of the last old record repeats exactly that one
    local arn3 = consumer(ARN)
    records = collect(c, { ConsumerARN = arn3, ShardId = "shardId-000000000000",
      StartingPosition = { Type = "AT_SEQUENCE_NUMBER", SequenceNumber = cont } }, #more + 1)
    assert.equal(#more + 1, #records)
    assert.equal(cont, records[1].SequenceNumber)
    assert.equal(put[#put].SequenceNumber, records[#records].SequenceNumber)
  end)

  it("subscribes to two shards concurrently inside kinesis.run", function()
    assert(c:create_stream { StreamName = "efo-pair", ShardCount = 2 })
    local arn = wait_active("efo-pair").StreamARN
    local shards = assert(c:list_shards { StreamName = "efo-pair" }).Shards
    assert.equal(2, #shards)
    local want = {}
    for s, shard in ipairs(shards) do
      local batch = {}
      for i = 1, 20 do
        batch[i] = { PartitionKey = "k", ExplicitHashKey = shard.HashKeyRange.StartingHashKey,
                     Data = shard.ShardId .. ":" .. i .. ":" .. bytes(50, s * 100 + i) }
      end
      assert.equal(0, assert(c:put_records { StreamName = "efo-pair", Records = batch }).FailedRecordCount)
      want[shard.ShardId] = batch
    end
    local carn = consumer(arn)
    local log = {}
    local t0 = monotime()
    local calls, streaming = 0, true
    local results = kinesis.run(function()
      -- ordinary calls keep going on the same multi handle meanwhile
      kinesis.spawn(function()
        while streaming do
          assert(c:describe_stream_summary { StreamName = "efo-pair" })
          calls = calls + 1
          kinesis.sleep(0.2)
        end
      end)
      local tasks = {}
      for _, shard in ipairs(shards) do
        tasks[#tasks + 1] = kinesis.spawn(function()
          local got, n = {}, 0
          for event, err in c:subscribe_to_shard { ConsumerARN = carn, ShardId = shard.ShardId,
                                                   StartingPosition = { Type = "TRIM_HORIZON" } } do
            assert(event, tostring(err))
            n = n + 1
            log[#log + 1] = shard.ShardId
            for _, r in ipairs(event.Records) do got[#got + 1] = r.Data end
            -- four events each: about 4 s when both run at once, 8 s one after the other
            if n >= 4 then break end
          end
          return shard.ShardId, got
        end)
      end
      local all = kinesis.wait_all(tasks)
      streaming = false
      return all
    end)
    local elapsed = monotime() - t0
    assert.is_true(calls >= 8, "only " .. calls .. " calls went through while streaming")
    for _, r in ipairs(results) do
      assert.is_true(r[1], tostring(r[2]))
      local batch = want[r[2]]
      assert.equal(#batch, #r[3])
      for i = 1, #batch do assert.is_true(batch[i].Data == r[3][i]) end
    end
    assert.is_true(elapsed < 7, "took " .. elapsed .. " s: the subscriptions did not overlap")
    -- events of both shards interleave
    local first_other
    for i = 2, #log do if log[i] ~= log[1] then first_other = i break end end
    assert.is_truthy(first_other)
    assert.is_true(first_other <= 4, "one shard's four events all came first")
  end)

  it("gives ResourceNotFoundException for a consumer that does not exist", function()
    local sub = c:subscribe_to_shard { ConsumerARN = ARN .. "/consumer/nobody:1700000000",
      ShardId = "shardId-000000000000", StartingPosition = { Type = "TRIM_HORIZON" } }
    local calls, first, err = 0, nil, nil
    for event, e in sub do
      calls = calls + 1
      first, err = event, e
    end
    assert.equal(1, calls)
    assert.is_false(first)
    assert.equal("aws", err.kind)
    assert.equal("ResourceNotFoundException", err.code)
    -- kinesis-local answers 200 and sends the exception as the stream's
    -- first message (the service answers 400 before any stream: both are
    -- the same error to the caller; the stub spec covers the 400)
    assert.is_true(err.status == 200 or err.status == 400)
    assert.equal(err.status == 200, err.in_stream == true)
    assert.equal("SubscribeToShard", err.op)
    assert.is_false(err.retryable)
  end)

  it("renews through a real ResourceInUseException, waiting at least 5 s", function()
    local carn = consumer(ARN)
    local p = { ConsumerARN = carn, ShardId = "shardId-000000000000", StartingPosition = { Type = "TRIM_HORIZON" } }
    local renewal, got, started, finished, last_cont
    kinesis.run(function()
      -- a first subscription holds the consumer for about two seconds
      kinesis.spawn(function()
        local n = 0
        for event, err in c:subscribe_to_shard(p) do
          assert(event, tostring(err))
          n = n + 1
          if n >= 2 then break end
        end
      end)
      kinesis.sleep(0.3)
      started = monotime()
      renewal = c:subscribe(p)
      got = {}
      for event, err in renewal do
        assert(event, tostring(err))
        last_cont = event.ContinuationSequenceNumber
        for _, r in ipairs(event.Records) do got[#got + 1] = r end
        if #got >= #RECORDS then break end
      end
      finished = monotime()
    end)
    assert.is_true(renewal.in_use_waits >= 1)
    assert.is_true(finished - started >= 5, "resubscribed after " .. (finished - started) .. " s")
    assert.is_true(renewal.subscriptions >= 2)
    assert_same_records(RECORDS, PUT, { table.unpack(got, 1, #RECORDS) })
    assert.equal(last_cont, renewal.position)
    assert.equal(got[#got].SequenceNumber, renewal.position)
    -- held in a variable, the iterator is not the for loop's closing value
    assert.is_false(renewal.closed)
    renewal:close()
    assert.is_true(renewal.closed)
  end)
end)

---------------------------------------------------------------- loopback stub

describe("subscribe_to_shard against the loopback stub", function()
  local stub, c

  lazy_setup(function()
    stub = peers.start("stub")
    c = peers.client(stub, { timeout = { event = 5 } })
  end)
  lazy_teardown(function()
    if c then c:close() end
    if stub then stub.stop() end
  end)
  before_each(function() stub:reset() end)

  local function drain(sub)
    local events, err, calls = {}, nil, 0
    for event, e in sub do
      calls = calls + 1
      if event then events[#events + 1] = event else err = e end
    end
    return events, err, calls
  end

  it("signs and sends the SubscribeToShard request", function()
    stub:queue { { frames_b64 = b64list { event_frame("1", {}) } } }
    drain(c:subscribe_to_shard(params()))
    local req = stub:requests()[1]
    assert.equal("POST", req.method)
    assert.equal("Kinesis_20131202.SubscribeToShard", req.headers["x-amz-target"])
    assert.equal("application/x-amz-json-1.1", req.headers["content-type"])
    assert.matches("^AWS4%-HMAC%-SHA256 Credential=AKIDTEST/%d+/us%-east%-1/kinesis/aws4_request", req.headers.authorization)
    assert.same({ ConsumerARN = CONSUMER, ShardId = "shardId-000000000000",
                  StartingPosition = { Type = "TRIM_HORIZON" } }, cjson.decode(req.body))
  end)

  it("decodes the synthetic stream: initial-response consumed, records, heartbeat, aggregate, child shards", function()
    local bin = vector("kinesis-synthetic/stream-sequence.bin")
    local doc = cjson.decode(vector("kinesis-synthetic/stream-sequence.json"))
    stub:queue { { frames_b64 = { peers.b64encode(bin) } } }
    local sub = c:subscribe_to_shard(params())
    local events, err = drain(sub)
    assert.is_nil(err)
    assert.equal(1, sub.skipped)                         -- the initial-response
    assert.equal(4, #events)
    for i, event in ipairs(events) do
      local want = doc.messages[i + 1].payload_json
      assert.equal(#want.Records, #event.Records)
      for k, r in ipairs(event.Records) do
        local w = want.Records[k]
        assert.is_true(peers.b64decode(w.Data) == r.Data)
        assert.equal(w.PartitionKey, r.PartitionKey)
        assert.equal(w.SequenceNumber, r.SequenceNumber)
        assert.equal(w.ApproximateArrivalTimestamp, r.ApproximateArrivalTimestamp)
        assert.equal(w.EncryptionType, r.EncryptionType)
      end
      assert.equal(want.ContinuationSequenceNumber, event.ContinuationSequenceNumber)
      assert.equal(want.MillisBehindLatest, event.MillisBehindLatest)
      assert.equal("integer", math.type(event.MillisBehindLatest))
    end
    assert.is_true(read_file(SHARED .. "/vectors/kpl/mixed-explicit-hash-keys.bin") == events[3].Records[1].Data)
    assert.is_nil(events[4].ContinuationSequenceNumber)     -- the shard has ended
    assert.equal(2, #events[4].ChildShards)
    assert.equal("shardId-000000000001", events[4].ChildShards[1].ShardId)
    assert.same({ "shardId-000000000000" }, events[4].ChildShards[1].ParentShards)
    assert.is_true(sub.finished)
  end)

  it("gives the same events however the bytes are cut (1, 7, 100, 4096-byte pieces)", function()
    local bin = vector("kinesis-synthetic/stream-sequence.bin")
    stub:queue { { frames_b64 = { peers.b64encode(bin) } } }
    local reference = drain(c:subscribe_to_shard(params()))
    for _, size in ipairs { 1, 7, 100, 4096 } do
      stub:queue { { frames_b64 = { peers.b64encode(bin) }, chunk_bytes = size } }
      local events, err = drain(c:subscribe_to_shard(params()))
      assert.is_nil(err)
      assert.same(reference, events)
    end
  end)

  it("carries a 1 MiB record intact", function()
    local bin = vector("kinesis-synthetic/initial-response.bin") .. vector("kinesis-synthetic/subscribe-event-large.bin")
    local doc = cjson.decode(vector("kinesis-synthetic/subscribe-event-large.json"))
    stub:queue { { frames_b64 = { peers.b64encode(bin) }, chunk_bytes = 65536 } }
    local events, err = drain(c:subscribe_to_shard(params()))
    assert.is_nil(err)
    assert.equal(1, #events)
    assert.equal(1048576, #events[1].Records[1].Data)
    local sha = doc.messages[1].record_data_sha256
    assert.equal(sha, core.sha256_hex(events[1].Records[1].Data))
  end)

  -- what @aws-sdk/client-kinesis yields for the same bytes
  for _, case in ipairs { "kinesis-local-subscribe-to-shard", "stream-sequence+exception-resource-in-use",
                          "initial-response+large+exception-internal-failure",
                          "initial-response+error-unmodeled", "initial-response+negative-message-crc-corrupt" } do
    it("matches the AWS SDK on " .. case, function()
      local replay = cjson.decode(vector("sdk-replay/" .. case .. ".json"))
      local parts = {}
      for i, f in ipairs(replay.files) do parts[i] = read_file(SHARED .. "/vectors/" .. f) end
      stub:queue { { frames_b64 = { peers.b64encode(table.concat(parts)) }, chunk_bytes = 1000 } }
      local events, err, calls = drain(c:subscribe_to_shard(params()))
      assert.equal(#replay.events, #events)
      for i, want in ipairs(replay.events) do
        local got = events[i]
        assert.equal(#want.records, #got.Records)
        for k, w in ipairs(want.records) do
          local r = got.Records[k]
          assert.equal(w.PartitionKey, r.PartitionKey)
          assert.equal(w.SequenceNumber, r.SequenceNumber)
          assert.equal(w.DataLength, #r.Data)
          assert.equal(w.EncryptionType, r.EncryptionType)
          assert.is_true(math.abs(iso_seconds(w.ApproximateArrivalTimestamp) - r.ApproximateArrivalTimestamp) < 0.0015)
        end
        local cont = want.ContinuationSequenceNumber
        if cont == cjson.null then cont = nil end
        assert.equal(cont, got.ContinuationSequenceNumber)
        assert.equal(want.MillisBehindLatest, got.MillisBehindLatest)
        if want.ChildShards == cjson.null or want.ChildShards == nil then
          assert.is_nil(got.ChildShards)
        else
          assert.same(want.ChildShards, got.ChildShards)
        end
      end
      if replay.error == cjson.null then
        assert.is_nil(err)
        assert.equal(#events, calls)
      else
        assert.equal(#events + 1, calls)
        if replay.error.name == "Error" then
          -- the SDK's generic checksum failure: ours is a protocol error
          assert.equal("protocol", err.kind)
          assert.matches("message_crc", err.message)
        else
          assert.equal("aws", err.kind)
          assert.equal(replay.error.name, err.code)
          assert.equal(replay.error.message, err.message)
        end
      end
    end)
  end

  it("turns in-stream exceptions into errors with their code", function()
    local cases = {
      { "exception-resource-in-use.bin", "ResourceInUseException", false },
      { "exception-internal-failure.bin", "InternalFailureException", true },
      { "error-unmodeled.bin", "InternalError", false },
    }
    for _, case in ipairs(cases) do
      stub:queue { { frames_b64 = b64list { event_frame("7", { { "1", "x" } }),
                                            vector("kinesis-synthetic/" .. case[1]),
                                            event_frame("8", {}) },
                     headers = { ["x-amzn-RequestId"] = "rid-" .. case[2] } } }
      local events, err, calls = drain(c:subscribe_to_shard(params()))
      assert.equal(1, #events)                   -- the event before it, nothing after
      assert.equal(2, calls)
      assert.equal("aws", err.kind)
      assert.equal(case[2], err.code)
      assert.equal(case[3], err.retryable)
      assert.is_true(err.in_stream)
      assert.equal(200, err.status)
      assert.equal("rid-" .. case[2], err.request_id)
      assert.matches("SubscribeToShard: aws error " .. case[2], tostring(err))
    end
    -- KMS errors travel the same way
    local kms = core.es_encode({
      { name = ":message-type", type = "string", value = "exception" },
      { name = ":exception-type", type = "string", value = "KMSAccessDeniedException" },
      { name = ":content-type", type = "string", value = "application/json" },
    }, '{"message":"no access to the key"}')
    stub:queue { { frames_b64 = { peers.b64encode(kms) } } }
    local _, err = drain(c:subscribe_to_shard(params()))
    assert.equal("KMSAccessDeniedException", err.code)
    assert.equal("no access to the key", err.message)
  end)

  it("returns an HTTP error before the stream as the ordinary AWS error", function()
    stub:queue { { status = 400, headers = { ["Content-Type"] = "application/x-amz-json-1.1",
                                             ["x-amzn-RequestId"] = "req-400" },
                   body = '{"__type":"ResourceInUseException","message":"consumer busy"}' },
                 { status = 503, body = "<html>Service Unavailable</html>" } }
    local events, err, calls = drain(c:subscribe_to_shard(params()))
    assert.equal(0, #events)
    assert.equal(1, calls)
    assert.equal("aws", err.kind)
    assert.equal("ResourceInUseException", err.code)
    assert.equal("consumer busy", err.message)
    assert.equal(400, err.status)
    assert.equal("req-400", err.request_id)
    _, err = drain(c:subscribe_to_shard(params()))
    assert.equal("ServiceUnavailable", err.code)
    assert.is_true(err.retryable)
  end)

  it("rejects invalid parameters without sending anything", function()
    local events, err, calls = drain(c:subscribe_to_shard { ConsumerARN = CONSUMER, ShardId = "shardId-000000000000" })
    assert.equal(0, #events)
    assert.equal(1, calls)
    assert.equal("validation", err.kind)
    assert.equal("StartingPosition", err.field)
    assert.equal(0, #stub:requests())
    assert.has_error(function() c:subscribe_to_shard("x") end)
    assert.has_error(function() require("kinesis.subscribe").subscribe_to_shard(c, params(), { event_timeout = -1 }) end)
  end)

  local function wait_released(seconds)
    local deadline = monotime() + (seconds or 3)
    repeat
      if stub:stats().in_flight == 0 then return true end
      sleep(0.05)
    until monotime() > deadline
    return false
  end

  local function endless()
    return { frames_b64 = b64list { event_frame("5", { { "5", "data" } }) }, ["repeat"] = 100000,
             frame_delay_ms = 20 }
  end

  it("releases the connection when the loop breaks (Lua 5.4 closes the iterator)", function()
    stub:queue { endless() }
    local n = 0
    for event in c:subscribe_to_shard(params()) do
      assert.is_truthy(event)
      n = n + 1
      if n == 3 then break end
    end
    assert.equal(3, n)
    assert.is_true(wait_released(), "the stub still serves the subscription")
  end)

  it("releases the connection on :close() and on a <close> variable", function()
    stub:queue { endless() }
    local sub = c:subscribe_to_shard(params())
    assert.is_truthy(sub())
    assert.equal(1, stub:stats().in_flight)
    sub:close()
    sub:close()
    assert.is_nil(sub())                       -- a closed subscription just ends
    assert.is_true(wait_released())

    stub:queue { endless() }
    local chunk = assert(load([[
      local c, params = ...
      local sub <close> = c:subscribe_to_shard(params)
      return (sub())
    ]]))
    assert.is_truthy(chunk(c, params()))
    assert.is_true(wait_released())
  end)

  it("reuses the curl handle of a finished subscription", function()
    local t = c:transport()
    for _ = 1, 3 do
      stub:queue { { frames_b64 = b64list { event_frame("1", {}) } } }
      drain(c:subscribe_to_shard(params()))
    end
    assert.equal(1, #t.idle)
  end)

  it("ends a subscription silent for longer than the event timeout with a transport Timeout", function()
    stub:queue { { frames_b64 = b64list { event_frame("1", {}), event_frame("2", {}) }, stall_after = 1 } }
    local sub = require("kinesis.subscribe").subscribe_to_shard(c, params(), { event_timeout = 0.6 })
    local t0 = monotime()
    local events, err = drain(sub)
    local elapsed = monotime() - t0
    assert.equal(1, #events)
    assert.equal("transport", err.kind)
    assert.equal("Timeout", err.code)
    assert.is_true(err.retryable)
    assert.is_true(elapsed >= 0.55 and elapsed < 2, "elapsed " .. elapsed)
    assert.is_true(wait_released())
  end)

  it("outlives the client's request timeout: a stream has no total time limit", function()
    local short = peers.client(stub, { timeout = { request = 0.3, event = 2 }, retry = { mode = "off" } })
    stub:queue { { frames_b64 = b64list { event_frame("1", {}) }, ["repeat"] = 8, frame_delay_ms = 150 } }
    local t0 = monotime()
    local events, err = drain(short:subscribe_to_shard(params()))
    assert.is_nil(err)
    assert.equal(8, #events)
    assert.is_true(monotime() - t0 > 1)
    -- while an ordinary call still times out after 0.3 s
    stub:queue { { action = "stall" } }
    local out, cerr = short:describe_limits()
    assert.is_nil(out)
    assert.equal("Timeout", cerr.code)
    short:close()
  end)

  it("takes the event timeout from the client's timeout.event", function()
    local quick = peers.client(stub, { timeout = { event = 0.4 } })
    stub:queue { { frames_b64 = b64list { event_frame("1", {}) }, stall_after = 0 } }
    local t0 = monotime()
    local _, err = drain(quick:subscribe_to_shard(params()))
    local elapsed = monotime() - t0
    assert.equal("Timeout", err.code)
    assert.is_true(elapsed >= 0.35 and elapsed < 1.5, "elapsed " .. elapsed)
    quick:close()
  end)
end)

---------------------------------------------------------------- renewal

describe("client:subscribe (renewal) against the loopback stub", function()
  local stub, c

  lazy_setup(function()
    stub = peers.start("stub")
    c = peers.client(stub, { timeout = { event = 5 } })
  end)
  lazy_teardown(function()
    if c then c:close() end
    if stub then stub.stop() end
  end)
  before_each(function() stub:reset() end)

  local function positions()
    local out = {}
    for i, r in ipairs(stub:requests()) do out[i] = cjson.decode(r.body).StartingPosition end
    return out
  end

  it("resubscribes after the last continuation, waits 5 s on ResourceInUseException, stops at shard end", function()
    local in_use = core.es_encode({
      { name = ":message-type", type = "string", value = "exception" },
      { name = ":exception-type", type = "string", value = "ResourceInUseException" },
    }, '{"message":"Another active subscription exists"}')
    local child = ',"ChildShards":[{"ShardId":"shardId-000000000002","ParentShards":["shardId-000000000000"],'
      .. '"HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"99"}}]'
    stub:queue {
      -- the first subscription runs out (its five minutes) after two events
      { frames_b64 = b64list { event_frame("100", { { "100", "a" } }), event_frame("200", { { "200", "b" } }) } },
      -- the service has not let go of it yet: in-stream, then as an HTTP error
      { frames_b64 = { peers.b64encode(in_use) } },
      { status = 400, body = '{"__type":"ResourceInUseException","message":"busy"}' },
      -- the shard is closed: its last event has no continuation
      { frames_b64 = b64list { event_frame("300", { { "300", "c" } }), event_frame(nil, {}, child) } },
    }
    local t0 = monotime()
    local r = c:subscribe(params())
    local data, conts = {}, {}
    for event, err in r do
      assert(event, tostring(err))
      conts[#conts + 1] = event.ContinuationSequenceNumber or "end"
      for _, rec in ipairs(event.Records) do data[#data + 1] = rec.Data end
    end
    local elapsed = monotime() - t0
    assert.same({ "a", "b", "c" }, data)
    assert.same({ "100", "200", "300", "end" }, conts)
    assert.same({
      { Type = "TRIM_HORIZON" },
      { Type = "AFTER_SEQUENCE_NUMBER", SequenceNumber = "200" },
      { Type = "AFTER_SEQUENCE_NUMBER", SequenceNumber = "200" },
      { Type = "AFTER_SEQUENCE_NUMBER", SequenceNumber = "200" },
    }, positions())
    assert.is_true(elapsed >= 10, "two in-use waits took only " .. elapsed .. " s")
    assert.is_true(elapsed < 14, "took " .. elapsed .. " s")
    assert.equal(2, r.in_use_waits)
    assert.equal(4, r.subscriptions)
    assert.is_true(r.shard_ended)
    assert.equal("shardId-000000000002", r.child_shards[1].ShardId)
    assert.equal("300", r.position)
    assert.is_true(r.closed)
    assert.is_nil(r())
  end)

  it("retries retryable failures with backoff and gives up after max_retries", function()
    local fail = core.es_encode({
      { name = ":message-type", type = "string", value = "exception" },
      { name = ":exception-type", type = "string", value = "InternalFailureException" },
    }, '{"message":"Internal service failure."}')
    local q = { { frames_b64 = b64list { event_frame("10", { { "10", "x" } }) }, stall_after = 1 } }
    for i = 2, 4 do q[i] = { frames_b64 = { peers.b64encode(fail) } } end
    stub:queue(q)
    local r = c:subscribe(params(), { max_retries = 3, retry_delay = 0.01, event_timeout = 0.5 })
    local events, errs = 0, {}
    for event, err in r do
      if event then events = events + 1 else errs[#errs + 1] = err end
    end
    assert.equal(1, events)
    assert.equal(1, #errs)
    assert.equal("InternalFailureException", errs[1].code)
    -- the first subscription times out after its event (failure 1), then
    -- three InternalFailureExceptions: the fourth failure in a row gives up
    assert.equal(4, #stub:requests())
    assert.is_true(r.closed)
    local pos = positions()
    for i = 2, 4 do assert.same({ Type = "AFTER_SEQUENCE_NUMBER", SequenceNumber = "10" }, pos[i]) end
  end)

  it("does not retry an error that will not go away", function()
    stub:queue { { status = 400, body = '{"__type":"ResourceNotFoundException","message":"no consumer"}' },
                 { frames_b64 = b64list { event_frame("1", {}) } } }
    local r = c:subscribe(params())
    local first, err = r()
    assert.is_false(first)
    assert.equal("ResourceNotFoundException", err.code)
    assert.is_nil(r())
    assert.equal(1, #stub:requests())
  end)

  it("counts subscriptions that end without any event as failures", function()
    local q = {}
    for i = 1, 3 do q[i] = { frames_b64 = {} } end
    stub:queue(q)
    local r = c:subscribe(params(), { max_retries = 2, retry_delay = 0.01 })
    local first, err = r()
    assert.is_false(first)
    assert.equal("EmptySubscription", err.code)
    assert.equal(3, #stub:requests())
  end)

  it("checks its options", function()
    assert.has_error(function() c:subscribe(params(), { in_use_delay = 1 }) end)
    assert.has_error(function() c:subscribe(params(), { max_retries = -1 }) end)
    assert.has_error(function() c:subscribe(params(), 5) end)
  end)

  it("runs renewals of several shards side by side in kinesis.run", function()
    local q = {}
    for s = 1, 2 do
      q[s] = { frames_b64 = b64list { event_frame(s .. "1", { { s .. "1", "s" .. s .. "a" } }),
                                      event_frame(nil, { { s .. "2", "s" .. s .. "b" } }, ',"ChildShards":[]') },
               frame_delay_ms = 300 }
    end
    stub:queue(q)
    local t0 = monotime()
    local results = kinesis.run(function()
      local tasks = {}
      for s = 1, 2 do
        tasks[s] = kinesis.spawn(function()
          local got = {}
          local r = c:subscribe(params { ShardId = "shardId-00000000000" .. s })
          for event, err in r do
            assert(event, tostring(err))
            for _, rec in ipairs(event.Records) do got[#got + 1] = rec.Data end
          end
          return table.concat(got, ","), r.shard_ended
        end)
      end
      return kinesis.wait_all(tasks)
    end)
    local elapsed = monotime() - t0
    local seen = {}
    for _, res in ipairs(results) do
      assert.is_true(res[1], tostring(res[2]))
      assert.is_true(res[3])
      seen[#seen + 1] = res[2]
    end
    table.sort(seen)
    assert.same({ "s1a,s1b", "s2a,s2b" }, seen)
    assert.is_true(elapsed < 0.55, "not concurrent: " .. elapsed .. " s")
  end)
end)
