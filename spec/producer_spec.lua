-- producer_spec.lua - kinesis.producer against kinesis-local (a 4-shard
-- stream): 50,000 records (5,000 in the suite, see N) of random binary data (0 B to 10 KiB) under random
-- partition keys, aggregated (plain script) and not (inside kinesis.run),
-- read back with GetRecords and deaggregated: every record where its
-- outcome says (shard, sequence and sub-sequence number), byte-exact, in put
-- order per key, one on_result call each. Also: what put() refuses before
-- anything is sent, ExplicitHashKey routing, close, stats and progress.

local peers = require "support.peers"
local kinesis = require "kinesis"

-- kinesis-local stores about 1 MB of PutRecords a second, so the full
-- 50,000 records (about 256 MB a mode) take some 35 minutes: more than the
-- suite can spend. The suite runs 5,000; the full run is
--   PRODUCER_SPEC_RECORDS=50000 sh tools/test.sh spec/producer_spec.lua
local N = tonumber(os.getenv("PRODUCER_SPEC_RECORDS")) or 5000

describe("producer against kinesis-local", function()
  local srv, client

  lazy_setup(function()
    srv = peers.start("kinesis-local", { env = { CREATE_STREAM_DURATION = "50ms", DELETE_STREAM_DURATION = "50ms",
      SHARD_LIMIT = "100" } })
    -- kinesis-local takes about a second per MB of PutRecords: a long
    -- request timeout, and the producer's buffer kept small (below) so no
    -- record waits past its TTL behind a slow server
    client = peers.client(srv, { timeout = { connect = 5, request = 300 } })
  end)
  lazy_teardown(function()
    if client then client:close() end
    if srv then srv.stop() end
  end)

  local function create(name, shards)
    assert(client:create_stream { StreamName = name, ShardCount = shards })
    assert(client:wait("stream_exists", { StreamName = name }, { delay = 0.05, max_attempts = 200 }))
  end

  -- every record of the stream, deaggregated, shard by shard in stream order:
  -- calls f(user_record, shard_id) for each
  local function read_all(name, f)
    for shard, err in client:items("list_shards", { StreamName = name }) do
      assert(shard, tostring(err))
      local it = assert(client:get_shard_iterator { StreamName = name, ShardId = shard.ShardId,
                                                    ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
      while it do
        local out = assert(client:get_records { ShardIterator = it, Limit = 10000 })
        for _, r in ipairs(out.Records) do
          local users = assert(kinesis.deaggregate(r))
          for _, u in ipairs(users) do f(u, shard.ShardId) end
        end
        if #out.Records == 0 and (out.MillisBehindLatest or 0) == 0 then break end
        it = out.NextShardIterator
      end
    end
  end

  -- random bytes to cut records from
  local pool
  local function random_pool()
    if not pool then
      local f = assert(io.open("/dev/urandom", "rb"))
      pool = f:read(1048576 + 10240)
      f:close()
    end
    return pool
  end

  -- Puts N records (random sizes 0..10 KiB, 4,000 random keys) through
  -- `producer`; checks everything named in the header; returns the stats.
  local function round_trip(name, make_producer, drive)
    local p = random_pool()
    math.randomseed(os.time())
    local keys = {}
    for i = 1, 4000 do
      local t = {}
      for j = 1, math.random(1, 40) do t[j] = string.char(math.random(33, 126)) end
      keys[i] = table.concat(t) .. "#" .. i
    end
    local expect = {}       -- key -> list of record numbers in put order
    local specs = {}        -- record number -> { off, len, key }
    local calls, by_position = 0, {}
    local on_result = function(r)
      calls = calls + 1
      assert(r.ok, tostring(r.err))
      local i = r.record.user
      assert.is_nil(specs[i].done, "a second outcome for record " .. i)
      specs[i].done = true
      local pos = r.ShardId .. "/" .. r.SequenceNumber .. "/" .. tostring(r.SubSequenceNumber)
      assert.is_nil(by_position[pos], "two records acknowledged at " .. pos)
      by_position[pos] = i
    end
    local producer = make_producer(on_result)
    drive(function()
      for i = 1, N do
        local key = keys[math.random(#keys)]
        local len = math.random(0, 10240)
        local off = math.random(1, #p - len)
        specs[i] = { off = off, len = len, key = key }
        local l = expect[key]
        if not l then l = {} expect[key] = l end
        l[#l + 1] = i
        assert(producer:put { PartitionKey = key, Data = p:sub(off, off + len - 1), user = i })
      end
      assert(producer:flush())
    end)
    assert.equal(N, calls)
    local st = producer:stats()
    assert.equal(N, st.put)
    assert.equal(N, st.acknowledged)
    assert.equal(0, st.failed)
    assert.equal(0, st.pending)
    assert.equal(0, st.buffered_bytes)
    assert.is_true(st.buffered_bytes_peak <= 6 * 2^20, "buffered " .. st.buffered_bytes_peak)
    -- read back: each record at the position its outcome named, byte-exact,
    -- and each key's records in put order
    local seen_order, found = {}, 0
    read_all(name, function(u, shard_id)
      local pos = shard_id .. "/" .. u.SequenceNumber .. "/" .. tostring(u.SubSequenceNumber)
      local i = by_position[pos]
      assert.is_not_nil(i, "a record in the stream no outcome named: " .. pos)
      local sp = specs[i]
      assert.equal(sp.key, u.PartitionKey)
      assert.is_true(u.Data == p:sub(sp.off, sp.off + sp.len - 1), "record " .. i .. " differs")
      local l = seen_order[sp.key]
      if not l then l = {} seen_order[sp.key] = l end
      l[#l + 1] = i
      found = found + 1
    end)
    assert.equal(N, found)
    for key, list in pairs(expect) do
      assert.same(list, seen_order[key], "order of key " .. key)
    end
    return st
  end

  it("aggregated, from a plain script: 50,000 records read back byte-exact, in order per key", function()
    create("agg", 4)
    local producer
    local st = round_trip("agg", function(on_result)
      -- kinesis-local does not enforce shard throughput: the limiter is
      -- opened wide so the run measures the producer, not the 4 MiB/s pace
      producer = client:producer { stream = "agg", on_result = on_result, rate_limit = 64,
                                   max_buffered_bytes = 6 * 2^20, record_ttl = 600 }
      return producer
    end, function(body) body() end)
    assert.is_true(st.aggregates > 0)
    assert.is_true(st.aggregated_records > N / 2, "aggregated " .. st.aggregated_records)
    -- batched: a call carries several aggregates, on average more than one aggregate's limit
    assert.is_true(st.bytes_put / st.requests > 51200, "requests " .. st.requests)
    assert(client:delete_stream { StreamName = "agg" })
  end)

  it("not aggregated, inside kinesis.run: 50,000 records read back byte-exact, in order per key", function()
    create("plain", 4)
    local st = round_trip("plain", function(on_result)
      return client:producer { stream = "plain", aggregate = false, on_result = on_result, rate_limit = 64,
                               max_buffered_bytes = 6 * 2^20, record_ttl = 600 }
    end, function(body) kinesis.run(body) end)
    assert.equal(0, st.aggregates)
    assert.is_true(st.requests >= N / 500, "requests " .. st.requests)
    assert(client:delete_stream { StreamName = "plain" })
  end)

  describe("put", function()
    local p, results
    lazy_setup(function()
      create("small", 2)
    end)
    before_each(function()
      results = {}
      p = client:producer { stream = "small", on_result = function(r) results[#results + 1] = r end }
    end)

    it("refuses records over the service's limits before sending anything", function()
      local function refused(rec, code, field)
        local ok, err = p:put(rec)
        assert.is_nil(ok)
        assert.equal(code, err.code)
        assert.equal("validation", err.kind)
        assert.equal(field, err.field)
        return err
      end
      -- Data + PartitionKey over 1 MiB: the key's bytes count
      local err = refused({ PartitionKey = "kk", Data = string.rep("x", 1048575) }, "RecordTooLarge", "Data")
      assert.truthy(err.message:find("1048577", 1, true), err.message)
      refused({ PartitionKey = "", Data = "x" }, "ValidationError", "PartitionKey")
      refused({ Data = "x" }, "ValidationError", "PartitionKey")
      refused({ PartitionKey = "k" }, "ValidationError", "Data")
      refused({ PartitionKey = string.rep("k", 257), Data = "x" }, "ValidationError", "PartitionKey")
      refused({ PartitionKey = "k\255", Data = "x" }, "ValidationError", "PartitionKey")
      assert.equal(0, p:stats().put)
      assert.equal(0, p:stats().requests)
      assert.equal(0, #results)
    end)

    it("counts partition key characters, not bytes (256 three-byte characters pass)", function()
      assert(p:put { PartitionKey = string.rep("€", 256), Data = "x" })
      local ok, err = p:put { PartitionKey = string.rep("€", 257), Data = "x" }
      assert.is_nil(ok)
      assert.equal("PartitionKey", err.field)
      assert(p:flush())
      assert.equal(1, #results)
      assert.is_true(results[1].ok, tostring(results[1].err))
    end)

    it("refuses an ExplicitHashKey that is not a 128-bit decimal", function()
      for _, bad in ipairs { "-1", "01", "340282366920938463463374607431768211456", "1e5", 12 } do
        local ok, err = p:put { PartitionKey = "k", Data = "x", ExplicitHashKey = bad }
        assert.is_nil(ok, tostring(bad))
        assert.equal("ExplicitHashKey", err.field)
      end
      assert.equal(0, p:stats().put)
      assert.equal(0, p:stats().requests)
    end)

    it("routes by ExplicitHashKey, aggregated or not, to the shard that holds it", function()
      local shards = {}
      for s in client:items("list_shards", { StreamName = "small" }) do shards[#shards + 1] = s end
      for _, agg in ipairs { true, false } do
        results = {}
        -- a long linger: nothing leaves before flush, so each shard's three
        -- records share one aggregate
        local q = client:producer { stream = "small", aggregate = agg, linger = 30,
                                    on_result = function(r) results[#results + 1] = r end }
        for i, s in ipairs(shards) do
          for j = 1, 3 do
            assert(q:put { PartitionKey = "same-key", Data = i .. ":" .. j,
                           ExplicitHashKey = s.HashKeyRange.EndingHashKey, user = s.ShardId })
          end
        end
        assert(q:flush())
        assert.equal(3 * #shards, #results)
        for _, r in ipairs(results) do
          assert.is_true(r.ok, tostring(r.err))
          assert.equal(r.record.user, r.ShardId)
          if agg then assert.is_number(r.SubSequenceNumber) else assert.is_nil(r.SubSequenceNumber) end
        end
      end
    end)

    it("after close, put returns a Closed error and nothing is lost", function()
      for i = 1, 10 do assert(p:put { PartitionKey = "c" .. i, Data = "d" }) end
      assert(p:close())
      assert.equal(10, #results)
      local ok, err = p:put { PartitionKey = "k", Data = "x" }
      assert.is_nil(ok)
      assert.equal("Closed", err.code)
      assert.equal(10, #results)
    end)

    it("reports an unknown stream as a failure of every record, with the service error", function()
      local q = client:producer { stream = "no-such-stream", record_ttl = 2,
                                  on_result = function(r) results[#results + 1] = r end }
      for i = 1, 5 do assert(q:put { PartitionKey = "u" .. i, Data = "d" }) end
      assert(q:flush())
      assert.equal(5, #results)
      for _, r in ipairs(results) do
        assert.is_false(r.ok)
        assert.equal("Expired", r.err.code)
        assert.equal("ResourceNotFoundException", r.err.last_error.code)
      end
      assert.equal(5, q:stats().failed_by_code.Expired)
      -- without a shard map nothing is sent: no record bypasses its shard's limiter
      assert.equal(0, q:stats().requests)
    end)

    it("paces each shard with its token bucket: what the bucket does not allow waits, then expires", function()
      create("paced", 1)
      local q = client:producer { stream = "paced", aggregate = false, rate_limit = 0.01, record_ttl = 1,
                                  on_result = function(r) results[#results + 1] = r end }
      -- 10 records/s on one shard (a bucket of 10), 100 records, 1 s to live
      for i = 1, 100 do assert(q:put { PartitionKey = "p" .. i, Data = "x" }) end
      assert(q:flush())
      assert.equal(100, #results)
      local st = q:stats()
      assert.is_true(st.acknowledged >= 10 and st.acknowledged <= 30, "acknowledged " .. st.acknowledged)
      assert.equal(100 - st.acknowledged, st.failed_by_code.Expired)
      assert.equal(10, st.rates["shardId-000000000000"].records_per_second)
    end)

    it("keeps counters and prints one progress line", function()
      for i = 1, 20 do assert(p:put { PartitionKey = "s" .. i, Data = string.rep("z", 100) }) end
      assert(p:flush())
      local st = p:stats()
      assert.equal(20, st.put)
      assert.equal(2000 + 20 * 2 + 11, st.bytes_put)
      assert.equal(20, st.acknowledged)
      assert.equal(0, st.in_flight)
      assert.equal(0, st.buffered)
      assert.equal(2, st.shards)
      for _, r in pairs(st.rates) do assert.equal(1000, r.records_per_second) end
      local line = p:progress()
      assert.truthy(line:find("20 put, 20 acked, 0 failed", 1, true), line)
      assert.truthy(line:find("rec/s", 1, true) and line:find("MB/s", 1, true) and line:find("buffer", 1, true), line)
    end)
  end)
end)
