-- producer_faults_spec.lua - kinesis.producer through spec/support/producer_proxy.js
-- in front of kinesis-local: 10 % of PutRecords entries failed with
-- ProvisionedThroughputExceededException, some connections reset before the
-- request is forwarded, some answers dropped after it was written. Every
-- record gets exactly one outcome and none is lost; a record is stored twice
-- only if an answer carrying it was dropped; ordered = true keeps each key's
-- order across the retries. Then the memory bound against slow answers.

local peers = require "support.peers"
local kinesis = require "kinesis"
local cjson = require "cjson"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function run(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end
local PARENT_PID = tonumber((run("echo $PPID")))

-- starts producer_proxy.js in front of `upstream`; { endpoint, control(method, what, value), stop }
local function start_proxy(upstream)
  local port_file = os.tmpname()
  os.remove(port_file)
  local log = os.tmpname()
  local pid = tonumber(run(("node %s --upstream %s --port-file %s --parent %d > %s 2>&1 & echo $!"):format(
    sh_quote(peers.root .. "/spec/support/producer_proxy.js"), sh_quote(upstream), sh_quote(port_file),
    PARENT_PID, sh_quote(log))))
  local port
  for _ = 1, 100 do
    local f = io.open(port_file, "r")
    if f then port = tonumber(f:read("*a")) f:close() end
    if port then break end
    os.execute("sleep 0.1")
  end
  assert(port, "producer_proxy did not start: " .. (peers.read_file(log) or ""))
  local proxy = { endpoint = "http://127.0.0.1:" .. port }
  function proxy.control(method, what, value)
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, "wb"))
    f:write(cjson.encode(value or {}))
    f:close()
    local out = run(("curl -sS --noproxy '*' --max-time 10 -X %s -H 'Content-Type: application/json' "
      .. "--data-binary @%s %s"):format(method, sh_quote(tmp), sh_quote(proxy.endpoint .. "/__proxy/" .. what)))
    os.remove(tmp)
    return peers.integers(cjson.decode(out))
  end
  function proxy.stop()
    os.execute("kill " .. pid .. " 2>/dev/null")
    os.remove(port_file)
    os.remove(log)
  end
  return proxy
end

describe("producer through faults", function()
  local srv, proxy, direct, client

  lazy_setup(function()
    srv = peers.start("kinesis-local", { env = { CREATE_STREAM_DURATION = "50ms", DELETE_STREAM_DURATION = "50ms",
      SHARD_LIMIT = "100" } })
    direct = peers.client(srv)
    proxy = start_proxy(srv.endpoint)
    client = peers.client({ endpoint = proxy.endpoint }, { timeout = { connect = 2, request = 20 } })
  end)
  lazy_teardown(function()
    if client then client:close() end
    if direct then direct:close() end
    if proxy then proxy.stop() end
    if srv then srv.stop() end
  end)

  local function create(name, shards)
    assert(direct:create_stream { StreamName = name, ShardCount = shards })
    assert(direct:wait("stream_exists", { StreamName = name }, { delay = 0.05, max_attempts = 200 }))
  end

  -- id -> list of { shard, seq, sub, key } where the stream holds record id
  local function read_ids(name)
    local where = {}
    for shard, err in direct:items("list_shards", { StreamName = name }) do
      assert(shard, tostring(err))
      local it = assert(direct:get_shard_iterator { StreamName = name, ShardId = shard.ShardId,
                                                    ShardIteratorType = "TRIM_HORIZON" }).ShardIterator
      while it do
        local out = assert(direct:get_records { ShardIterator = it, Limit = 10000 })
        for _, r in ipairs(out.Records) do
          for _, u in ipairs(assert(kinesis.deaggregate(r))) do
            local id = string.unpack(">I4", u.Data)
            local l = where[id]
            if not l then l = {} where[id] = l end
            l[#l + 1] = { shard = shard.ShardId, seq = u.SequenceNumber, sub = u.SubSequenceNumber, key = u.PartitionKey }
          end
        end
        if #out.Records == 0 and (out.MillisBehindLatest or 0) == 0 then break end
        it = out.NextShardIterator
      end
    end
    return where
  end

  -- ids of the records the proxy wrote but whose answer it dropped
  local function dropped_ids()
    local ids = {}
    for _, e in ipairs(proxy.control("GET", "dropped")) do
      local rec = { Data = assert(peers.b64decode(e.Data)), PartitionKey = e.PartitionKey }
      for _, u in ipairs(assert(kinesis.deaggregate(rec))) do ids[string.unpack(">I4", u.Data)] = true end
    end
    return ids
  end

  -- N records (ids in the first 4 bytes, then 0..200 random bytes) over
  -- `keys` keys, put through a producer made with `popts`, driven by
  -- `drive`; checks one outcome each, none lost, duplicates only where an
  -- answer was dropped; returns outcomes, the stream's view and the keys
  local function faulted_run(name, n, keys, popts, drive)
    create(name, 4)
    proxy.control("POST", "config", { fail_rate = 0.1, reset_rate = 0.06, drop_rate = 0.06, seed = 42,
      reset_every = 12, drop_every = 12 })
    local outcomes, throttles = {}, 0
    local c = peers.client({ endpoint = proxy.endpoint }, { timeout = { connect = 2, request = 20 },
      log = function(ev) if ev.event == "producer_throttle" then throttles = throttles + 1 end end })
    popts.stream = name
    popts.on_result = function(r)
      local id = r.record.user
      assert.is_nil(outcomes[id], "second outcome for record " .. id)
      outcomes[id] = r
    end
    local p = c:producer(popts)
    local key_of = {}
    drive(function()
      for i = 1, n do
        local key = "key-" .. math.random(keys)
        key_of[i] = key
        local data = string.pack(">I4", i)
        for _ = 1, math.random(0, 200) do data = data .. string.char(math.random(0, 255)) end
        assert(p:put { PartitionKey = key, Data = data, user = i })
      end
      assert(p:flush())
    end)
    local pstats = proxy.control("GET", "stats")
    local maybe_twice = dropped_ids()
    proxy.control("POST", "config", {})
    -- the faults happened
    assert.is_true(pstats.failed_entries > 0, cjson.encode(pstats))
    assert.is_true(pstats.resets > 0, cjson.encode(pstats))
    assert.is_true(pstats.drops > 0, cjson.encode(pstats))
    assert.is_true(throttles > 0, "no shard slowed down after throttling")
    local st = p:stats()
    assert.is_true(st.retried > 0)
    -- one outcome each
    local acked, failed = 0, 0
    for i = 1, n do
      local r = outcomes[i]
      assert.is_table(r, "no outcome for record " .. i)
      if r.ok then acked = acked + 1 else failed = failed + 1 end
    end
    assert.equal(n, acked + failed)
    assert.equal(n, st.acknowledged + st.failed)
    assert.equal(0, st.pending)
    -- nothing lost: each acknowledged record where its outcome says;
    -- duplicates only among records whose answer was dropped
    local where = read_ids(name)
    for i = 1, n do
      local r, found = outcomes[i], where[i]
      if r.ok then
        assert.is_table(found, "acknowledged record " .. i .. " is not in the stream")
        local at = false
        for _, w in ipairs(found) do
          if w.shard == r.ShardId and w.seq == r.SequenceNumber and w.sub == r.SubSequenceNumber then at = true end
        end
        assert.is_true(at, "record " .. i .. " is not where its outcome says")
      end
      if found and #found > 1 then
        assert.is_true(maybe_twice[i] == true, "record " .. i .. " stored " .. #found .. " times, no answer dropped: "
          .. cjson.encode(found) .. " outcome " .. tostring(r.ShardId) .. "/" .. tostring(r.SequenceNumber) .. " attempts " .. r.attempts)
      end
    end
    c:close()
    return outcomes, where, key_of, st
  end

  it("unordered, not aggregated, in kinesis.run: one outcome per record, none lost", function()
    local outcomes = faulted_run("faults-1", 3000, 300, { aggregate = false, linger = 0.02, rate_limit = 20, batch_max_records = 100 },
      function(body) kinesis.run(body) end)
    -- with retries until the TTL, the faults cost attempts, not records
    local more = 0
    for _, r in pairs(outcomes) do
      assert.is_true(r.ok, tostring(r.err))
      if r.attempts > 1 then more = more + 1 end
    end
    assert.is_true(more > 0)
  end)

  it("aggregated, from a plain script: one outcome per record, none lost", function()
    local outcomes, _, _, st = faulted_run("faults-2", 3000, 300, { linger = 0.02, batch_max_records = 50 },
      function(body) body() end)
    assert.is_true(st.aggregates > 0)
    for _, r in pairs(outcomes) do assert.is_true(r.ok, tostring(r.err)) end
  end)

  it("ordered = true keeps each key's order across retries", function()
    local outcomes, where, key_of = faulted_run("faults-3", 2000, 40,
      { ordered = true, aggregate = false, linger = 0.02, rate_limit = 20, batch_max_records = 100 }, function(body) kinesis.run(body) end)
    -- per key, the first time each record appears in the stream follows put order
    local firsts = {}
    for id, list in pairs(where) do
      local best = list[1]
      for _, w in ipairs(list) do
        if #w.seq < #best.seq or (#w.seq == #best.seq and w.seq < best.seq) then best = w end
      end
      local k = key_of[id]
      firsts[k] = firsts[k] or {}
      firsts[k][#firsts[k] + 1] = { id = id, seq = best.seq }
    end
    local retried_keys = 0
    for k, list in pairs(firsts) do
      table.sort(list, function(a, b)
        if #a.seq ~= #b.seq then return #a.seq < #b.seq end
        return a.seq < b.seq
      end)
      for j = 2, #list do
        assert.is_true(list[j - 1].id < list[j].id, ("key %s: record %d stored before %d"):format(
          k, list[j - 1].id, list[j].id))
      end
      for _, e in ipairs(list) do
        if outcomes[e.id].attempts > 1 then retried_keys = retried_keys + 1 break end
      end
    end
    -- the order held where it was at risk: keys whose records were retried
    assert.is_true(retried_keys > 10, "keys with retried records: " .. retried_keys)
  end)

  it("ordered = true with aggregation keeps each key's order across retries", function()
    local _, where, key_of = faulted_run("faults-4", 2000, 40,
      { ordered = true, linger = 0.02, batch_max_records = 4, aggregation_max_size = 1500 }, function(body) kinesis.run(body) end)
    local firsts = {}
    for id, list in pairs(where) do
      local best = list[1]
      for _, w in ipairs(list) do
        if #w.seq < #best.seq or (#w.seq == #best.seq and (w.seq < best.seq or (w.seq == best.seq and (w.sub or 0) < (best.sub or 0)))) then
          best = w
        end
      end
      local k = key_of[id]
      firsts[k] = firsts[k] or {}
      firsts[k][#firsts[k] + 1] = { id = id, seq = best.seq, sub = best.sub or 0 }
    end
    for k, list in pairs(firsts) do
      table.sort(list, function(a, b)
        if #a.seq ~= #b.seq then return #a.seq < #b.seq end
        if a.seq ~= b.seq then return a.seq < b.seq end
        return a.sub < b.sub
      end)
      for j = 2, #list do
        assert.is_true(list[j - 1].id < list[j].id, ("key %s: record %d stored before %d"):format(
          k, list[j - 1].id, list[j].id))
      end
    end
  end)

  it("holds max_buffered_bytes when records come far faster than slow answers", function()
    create("slow", 2)
    proxy.control("POST", "config", { delay_ms = 400 })
    local function rss_kb()
      return tonumber(peers.read_file("/proc/self/status"):match("VmRSS:%s*(%d+)"))
    end
    local bound = 1048576
    local count, total = 0, 0
    local p = client:producer { stream = "slow", max_buffered_bytes = bound, rate_limit = 100,
                                on_result = function(r) assert(r.ok, tostring(r.err)) count = count + 1 end }
    local rss_before, rss_peak = rss_kb(), 0
    local chunk = string.rep("m", 8000)
    kinesis.run(function()
      for i = 1, 2500 do
        assert(p:put { PartitionKey = "b" .. i, Data = chunk })
        total = total + #chunk
        if i % 100 == 0 then rss_peak = math.max(rss_peak, rss_kb()) end
      end
      assert(p:flush())
    end)
    proxy.control("POST", "config", {})
    local st = p:stats()
    assert.equal(2500, count)
    -- 20 MB went through a 1 MiB buffer
    assert.is_true(total > 15 * bound)
    assert.is_true(st.buffered_bytes_peak <= bound, "peak " .. st.buffered_bytes_peak)
    assert.is_true(st.buffered_bytes_peak > bound / 2, "peak " .. st.buffered_bytes_peak)
    print(("\n[producer memory bound] %d MB put through max_buffered_bytes = %d; peak buffered %d B; "
      .. "VmRSS %d kB before, %d kB peak"):format(total // 1000000, bound, st.buffered_bytes_peak, rss_before, rss_peak))
  end)
end)
