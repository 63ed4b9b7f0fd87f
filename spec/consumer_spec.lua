-- consumer_spec.lua - kinesis.consumer against kinesis-local: a 4-shard
-- stream fed by a separate producer process while it is split and merged;
-- stop (SIGTERM) and kill -9 of a consumer process and its restart from the
-- checkpoint file; sub-sequence exact resumption in aggregates; a raising
-- handler; an expired iterator; kinesis.run mode; enhanced fan-out.
-- kinesis-local runs with clockshift.js preloaded so the spec can age its
-- shard iterators past their 300 s lifetime with a signal.

local peers = require "support.peers"
local cdata = require "support.cdata"
local kinesis = require "kinesis"

local ROOT = peers.root
local TMP = peers.tmpdir("consumer")
local q, sh, spawn_bg, alive, wait_exit = peers.quote, peers.sh, peers.spawn, peers.alive, peers.wait_exit

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local function count_lines(path)
  local n = 0
  for _ in read_file(path):gmatch("[^\n]+") do n = n + 1 end
  return n
end

local function fresh(name)
  local p = TMP .. "/consumer-" .. name
  os.remove(p)
  os.remove(p .. ".tmp")
  return p
end

local LUA = "lua5.4"

-- written: { key = count } from a feeder log
local function written_counts(path)
  local counts, total = {}, 0
  for key, n in read_file(path):gmatch("(%S+) (%d+)\n") do
    n = tonumber(n)
    assert(n == (counts[key] or 0) + 1, "feeder log out of order for " .. key)
    counts[key] = n
    total = total + 1
  end
  return counts, total
end

-- handled: list of { shard, seq, sub, key, n } from a consume.lua log
local function handled_list(path)
  local out = {}
  for shard, seq, sub, key, n in read_file(path):gmatch("(%S+) (%S+) (%S+) (%S+) (%S+)\n") do
    out[#out + 1] = { shard = shard, seq = seq, sub = tonumber(sub), key = key, n = tonumber(n) }
  end
  return out
end

-- Every written record handed over at least once, byte-exact, and for each
-- key in write order: a key's numbers first appear as 1, 2, 3, ...; a
-- number seen before is a redelivery. Returns the number of redeliveries.
local function verify(written, handled)
  local top, dups = {}, 0
  for _, h in ipairs(handled) do
    assert(h.key ~= "BAD", "a record was not byte-exact: " .. h.shard .. " " .. h.seq)
    local t = top[h.key] or 0
    if h.n == t + 1 then
      top[h.key] = h.n
    elseif h.n <= t then
      dups = dups + 1
    else
      error(("key %s: record %d handed over before record %d"):format(h.key, h.n, t + 1))
    end
  end
  for key, count in pairs(written) do
    assert.are.equal(count, top[key] or 0, "records of " .. key .. " handed over")
  end
  for key in pairs(top) do assert.is_truthy(written[key], "unknown key " .. key) end
  return dups
end

-- (seq, sub) of a checkpoint or record: is a strictly after b?
local function pos_after(seq_a, sub_a, seq_b, sub_b)
  local c = kinesis.checkpoints.compare_sequence(seq_a, seq_b)
  if c ~= 0 then return c > 0 end
  if sub_b == nil then return false end
  if sub_a == nil then return true end
  return sub_a > sub_b
end

local function load_cps(path)
  local store = kinesis.checkpoints.file { path = path }
  assert(store:open {})
  return assert(store:list())
end

-- Runs the consumer inside kinesis.run with a watchdog: a consumer that
-- never reaches stop_after_idle is stopped after `limit` seconds and the
-- spec fails instead of hanging.
local function run_bounded(c, limit)
  limit = limit or 90
  local timed_out, done = false, false
  local results = kinesis.run(function()
    local reader = kinesis.spawn(function() return c:run() end)
    kinesis.spawn(function()
      local waited = 0
      while not done and waited < limit do
        kinesis.sleep(0.2)
        waited = waited + 0.2
      end
      if not done then
        timed_out = true
        c:stop()
      end
    end)
    local r = { reader:wait() }
    done = true
    return r
  end)
  assert(not timed_out, "the consumer did not finish within " .. limit .. " s: " .. c:progress_line())
  assert(results[1], tostring(results[2]))
  return results[2], results[3]
end

describe("kinesis.consumer", function()
  local srv, client

  setup(function()
    os.execute("mkdir -p " .. q(TMP))
    srv = peers.start("kinesis-local", { env = {
      CREATE_STREAM_DURATION = "10ms", SPLIT_SHARD_DURATION = "10ms", MERGE_SHARDS_DURATION = "10ms",
      REGISTER_STREAM_CONSUMER_DURATION = "10ms", DELETE_STREAM_DURATION = "10ms", SHARD_LIMIT = "200",
      NODE_OPTIONS = "--require " .. ROOT .. "/spec/support/clockshift.js",
    } })
    client = peers.client(srv)
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  local function create(name, shards)
    assert(client:create_stream { StreamName = name, ShardCount = shards })
    assert(client:wait("stream_exists", { StreamName = name }, { delay = 0.1, max_attempts = 100 }))
  end

  local function wait_active(name)
    for _ = 1, 200 do
      local out = assert(client:describe_stream_summary { StreamName = name })
      if out.StreamDescriptionSummary.StreamStatus == "ACTIVE" then return end
      kinesis.sleep(0.05)
    end
    error(name .. " stayed UPDATING")
  end

  local function feed(stream, keys, batches, log, agg_every, pause, bg)
    local cmd = LUA .. " " .. q(ROOT .. "/spec/support/feeder.lua") .. " " .. q(srv.endpoint) .. " " ..
      q(stream) .. " " .. keys .. " " .. batches .. " " .. q(log) .. " " .. (agg_every or 0) .. " " .. (pause or 0)
    if bg then return spawn_bg(cmd, log .. ".out") end
    local out = sh(cmd .. " 2>&1")
    return out
  end

  local function consume_cmd(opts)
    opts.endpoint = srv.endpoint
    return LUA .. " " .. q(ROOT .. "/spec/support/consume.lua") .. " " .. q(require("cjson").encode(opts))
  end

  describe("options", function()
    it("names the field and the rule of a bad option before anything is sent", function()
      local h = function() end
      assert.has_error(function() client:consumer { handler = h } end,
        "kinesis.consumer: stream is required (or stream_arn)")
      assert.has_error(function() client:consumer { stream = "s" } end,
        "kinesis.consumer: handler must be a function(records, ctx)")
      assert.has_error(function() client:consumer { stream = "s", handler = h, max_records = 10001 } end,
        "kinesis.consumer: max_records must be at most 10000")
      assert.has_error(function() client:consumer { stream = "s", handler = h, idle_time_between_reads = 0.1 } end,
        "kinesis.consumer: idle_time_between_reads must be a number >= 0.2")
      assert.has_error(function() client:consumer { stream = "s", handler = h, start = "NOW" } end,
        'kinesis.consumer: start must be "TRIM_HORIZON", "LATEST" or { timestamp = epoch_seconds }')
      assert.has_error(function() client:consumer { stream = "s", handler = h, checkpoint = "often" } end,
        'kinesis.consumer: checkpoint must be "auto" or "manual"')
      assert.has_error(function() client:consumer { stream = "s", handler = h, store = {} } end,
        "kinesis.consumer: store must implement open() (see kinesis.checkpoints)")
    end)

    it("returns the error of a stream that does not exist", function()
      local c = client:consumer { stream = "no-such-stream", store = kinesis.checkpoints.memory(),
        handler = function() end }
      local ok, err = run_bounded(c)
      assert.is_nil(ok)
      assert.are.equal("ResourceNotFoundException", err.code)
    end)
  end)

  describe("resharding under a continuous producer", function()
    it("hands every record over, byte-exact, each key in write order across a split and a merge", function()
      create("reshard", 4)
      local wlog, out, store = fresh("reshard.written"), fresh("reshard.out"), fresh("reshard.cp")
      -- a backlog first, so the parents still hold unread records when
      -- their children appear; then the producer goes on during the resharding
      feed("reshard", 24, 25, wlog, 5, 0)
      local feeder = feed("reshard", 24, 60, wlog, 5, 0.04, true)
      -- a slow handler keeps the consumer behind the producer, so the parents
      -- still hold unread records when their children appear
      local cpid = spawn_bg(consume_cmd { stream = "reshard", store = store, out = out, stop_after_idle = 3,
        max_records = 20, slow = 0.3 }, out .. ".stdout")
      kinesis.sleep(0.5)
      -- split shard 0 at the middle of its range (2^125), then merge 2 and 3
      assert(client:split_shard { StreamName = "reshard", ShardToSplit = "shardId-000000000000",
        NewStartingHashKey = "42535295865117307932921825928971026432" })
      wait_active("reshard")
      kinesis.sleep(1)
      assert(client:merge_shards { StreamName = "reshard", ShardToMerge = "shardId-000000000002",
        AdjacentShardToMerge = "shardId-000000000003" })
      wait_active("reshard")
      assert.is_true(wait_exit(feeder, 120), "feeder finished")
      assert.is_true(wait_exit(cpid, 120), "consumer finished")
      local stdout = read_file(out .. ".stdout")
      assert.is_truthy(stdout:find("DONE true", 1, true), "consumer process said: " .. stdout)
      assert.is_nil(stdout:match("VIOLATION[^\n]*"))
      local written, total = written_counts(wlog)
      assert.is_true(total >= 24 * 85, "feeder wrote " .. total)
      local handled = handled_list(out)
      local dups = verify(written, handled)
      assert.are.equal(0, dups)     -- one uninterrupted run: nothing twice
      -- the closed parents are checkpointed at their end, the children read
      local cps = load_cps(store)
      for _, id in ipairs { "shardId-000000000000", "shardId-000000000002", "shardId-000000000003" } do
        assert.are.equal("SHARD_END", cps[id] and cps[id].sequence, id)
      end
      local children = 0
      for _, h in ipairs(handled) do
        if h.shard == "shardId-000000000004" or h.shard == "shardId-000000000005"
          or h.shard == "shardId-000000000006" then children = children + 1 end
      end
      assert.is_true(children > 0, "records read from the children")
    end)
  end)

  describe("stop and restart", function()
    it("SIGTERM or SIGINT ends after the batch in hand with its checkpoint; a restart goes on without a repeat", function()
      create("restart", 2)
      local wlog, out, store = fresh("restart.written"), fresh("restart.out"), fresh("restart.cp")
      feed("restart", 6, 40, wlog, 4, 0)
      local cpid = spawn_bg(consume_cmd { stream = "restart", store = store, out = out, max_records = 5, slow = 0.05 },
        out .. ".stdout")
      for _ = 1, 300 do
        if count_lines(out) >= 40 then break end
        kinesis.sleep(0.05)
      end
      os.execute("kill -TERM " .. cpid)
      assert.is_true(wait_exit(cpid, 30), "consumer stopped on SIGTERM")
      assert.is_truthy(read_file(out .. ".stdout"):find("DONE true", 1, true), "consumer process said: " .. read_file(out .. ".stdout"))
      local first = count_lines(out)
      local written, total = written_counts(wlog)
      assert.is_true(first < total, "stopped part-way")
      -- the second run is stopped by SIGINT the same way
      cpid = spawn_bg(consume_cmd { stream = "restart", store = store, out = out, max_records = 5, slow = 0.05 },
        out .. ".stdout2")
      for _ = 1, 300 do
        if count_lines(out) >= first + 40 then break end
        kinesis.sleep(0.05)
      end
      os.execute("kill -INT " .. cpid)
      assert.is_true(wait_exit(cpid, 30), "consumer stopped on SIGINT")
      assert.is_truthy(read_file(out .. ".stdout2"):find("DONE true", 1, true), "consumer process said: " .. read_file(out .. ".stdout2"))
      assert.is_true(count_lines(out) < total, "stopped part-way again")
      cpid = spawn_bg(consume_cmd { stream = "restart", store = store, out = out, stop_after_idle = 2 },
        out .. ".stdout3")
      assert.is_true(wait_exit(cpid, 60))
      assert.is_truthy(read_file(out .. ".stdout3"):find("DONE true", 1, true), "consumer process said: " .. read_file(out .. ".stdout3"))
      local dups = verify(written, handled_list(out))
      assert.are.equal(0, dups)
    end)

    it("kill -9: resumes from the checkpoint file; repeats only what was not checkpointed; no sub-record skipped", function()
      create("crash", 2)
      local wlog, out, store = fresh("crash.written"), fresh("crash.out"), fresh("crash.cp")
      feed("crash", 6, 30, wlog, 2, 0)
      local written = written_counts(wlog)
      local cpid = spawn_bg(consume_cmd { stream = "crash", store = store, out = out, max_records = 3, slow = 0.02,
        checkpoint = "per_record" }, out .. ".stdout")
      for _ = 1, 300 do
        if count_lines(out) >= 70 then break end
        kinesis.sleep(0.02)
      end
      os.execute("kill -9 " .. cpid)
      wait_exit(cpid, 10)
      local at_kill = load_cps(store)   -- never half-written: it parses
      local first = #handled_list(out)
      assert.is_true(next(at_kill) ~= nil, "checkpoints written before the kill")
      cpid = spawn_bg(consume_cmd { stream = "crash", store = store, out = out, stop_after_idle = 2,
        checkpoint = "per_record" }, out .. ".stdout2")
      assert.is_true(wait_exit(cpid, 60))
      assert.is_truthy(read_file(out .. ".stdout2"):find("DONE true", 1, true), "consumer process said: " .. read_file(out .. ".stdout2"))
      local handled = handled_list(out)
      verify(written, handled)
      -- the second run starts strictly after each shard's checkpoint
      for i = first + 1, #handled do
        local h = handled[i]
        local cp = at_kill[h.shard]
        if cp and cp.sequence:match("^%d+$") then
          assert.is_true(pos_after(h.seq, h.sub, cp.sequence, cp.sub_sequence),
            ("redelivered %s %s/%s at or before its checkpoint %s/%s"):format(h.shard, h.seq, tostring(h.sub),
              cp.sequence, tostring(cp.sub_sequence)))
        end
      end
    end)

    it("resumes an aggregate checkpointed part-way at its next sub-record", function()
      create("subseq", 1)
      local seqs = {}
      local function put(entry)
        entry.StreamName = "subseq"
        local o = assert(client:put_record(entry))
        seqs[#seqs + 1] = o.SequenceNumber
      end
      put { PartitionKey = "p", Data = "p1" }
      local agg = kinesis.aggregate { { PartitionKey = "p", Data = "a0" }, { PartitionKey = "p", Data = "a1" },
        { PartitionKey = "p", Data = "a2" }, { PartitionKey = "p", Data = "a3" } }
      put { PartitionKey = agg.PartitionKey, Data = agg.Data, ExplicitHashKey = agg.ExplicitHashKey }
      put { PartitionKey = "p", Data = "p2" }
      local function from(cp)
        local got = {}
        local store = kinesis.checkpoints.memory { checkpoints = { ["shardId-000000000000"] = cp } }
        local c = client:consumer { stream = "subseq", store = store, stop_after_idle = 0.5,
          idle_time_between_reads = 0.2, handler = function(records)
            for _, r in ipairs(records) do got[#got + 1] = r.Data .. "@" .. tostring(r.SubSequenceNumber) end
          end }
        assert(run_bounded(c))
        return table.concat(got, " "), store:get("shardId-000000000000")
      end
      local got, cp = from { sequence = seqs[2], sub_sequence = 1 }
      assert.are.equal("a2@2 a3@3 p2@0", got)
      assert.are.same({ sequence = seqs[3] }, cp)
      got = from { sequence = seqs[1] }
      assert.are.equal("a0@0 a1@1 a2@2 a3@3 p2@0", got)
      got = from { sequence = seqs[2], sub_sequence = 3 }
      assert.are.equal("p2@0", got)
    end)
  end)

  describe("manual checkpoints", function()
    it("record by record through a split: the parent ends at SHARD_END and its children follow", function()
      create("manual", 1)
      local wlog = fresh("manual.written")
      feed("manual", 6, 6, wlog, 2, 0)
      assert(client:split_shard { StreamName = "manual", ShardToSplit = "shardId-000000000000",
        NewStartingHashKey = "170141183460469231731687303715884105728" })
      wait_active("manual")
      feed("manual", 6, 6, wlog, 2, 0)
      local store = kinesis.checkpoints.memory()
      local handled = {}
      local c = client:consumer { stream = "manual", store = store, checkpoint = "manual", max_records = 4,
        idle_time_between_reads = 0.2, stop_after_idle = 1, shard_sync_interval = 0.5,
        handler = function(records, ctx)
          for _, r in ipairs(records) do
            local key, n = cdata.parse(r.Data)
            handled[#handled + 1] = { shard = ctx.shard_id, seq = r.SequenceNumber, key = key or "BAD", n = n }
            assert(ctx:checkpoint(r))
          end
        end }
      assert(run_bounded(c))
      assert.are.equal(0, verify(written_counts(wlog), handled))
      assert.are.same({ sequence = "SHARD_END" }, store:get("shardId-000000000000"))
      -- a part-way checkpoint stays part-way: a mid-batch aggregate sub-record
      local mids = 0
      for _, cp in pairs(store:list()) do if cp.sub_sequence then mids = mids + 1 end end
      assert.are.equal(0, mids, "every batch ended checkpointed as a whole")
    end)

    it("never moves a checkpoint backwards: a covered position writes nothing", function()
      create("backwards", 1)
      local seqs = {}
      for i = 1, 3 do
        seqs[i] = assert(client:put_record { StreamName = "backwards", PartitionKey = "k", Data = "b" .. i }).SequenceNumber
      end
      local store = kinesis.checkpoints.memory()
      local results = {}
      local c = client:consumer { stream = "backwards", store = store, checkpoint = "manual",
        idle_time_between_reads = 0.2, stop_after_idle = 0.5,
        handler = function(records, ctx)
          for _, r in ipairs(records) do
            if r.Data == "b3" then
              assert(ctx:checkpoint(r))
              local writes = store.writes
              local ok, why = ctx:checkpoint(records[1])
              results[#results + 1] = { ok, why, store.writes - writes }
            end
          end
        end }
      assert(run_bounded(c))
      assert.are.same({ { true, "behind", 0 } }, results)
      assert.are.same({ sequence = seqs[3] }, store:get("shardId-000000000000"))
    end)
  end)

  describe("failures", function()
    local function put_n(stream, n)
      local entries = {}
      for i = 1, n do entries[i] = { PartitionKey = "k", Data = "r" .. i } end
      local out = assert(client:put_records { StreamName = stream, Records = entries })
      assert.are.equal(0, out.FailedRecordCount)
      local seqs = {}
      for i, r in ipairs(out.Records) do seqs[i] = r.SequenceNumber end
      return seqs
    end

    it("hands a batch whose handler raised over again, with nothing checkpointed past it", function()
      create("raise", 1)
      local seqs = put_n("raise", 30)
      local store = kinesis.checkpoints.memory()
      local deliveries, failing = {}, 0
      local c
      c = client:consumer { stream = "raise", store = store, max_records = 10, retry_delay = 0.01,
        idle_time_between_reads = 0.2, stop_after_idle = 0.5,
        handler = function(records)
          local ids = {}
          for i, r in ipairs(records) do ids[i] = r.Data end
          deliveries[#deliveries + 1] = table.concat(ids, ",")
          for _, r in ipairs(records) do
            if r.Data == "r15" and failing < 2 then
              failing = failing + 1
              -- nothing past the previous batch is checkpointed now
              local cp = store:get("shardId-000000000000")
              assert(cp.sequence == seqs[10], "checkpoint moved past the failing batch")
              error("cannot handle r15")
            end
          end
        end }
      assert(run_bounded(c))
      local batch2 = "r11,r12,r13,r14,r15,r16,r17,r18,r19,r20"
      assert.are.same({ "r1,r2,r3,r4,r5,r6,r7,r8,r9,r10", batch2, batch2, batch2,
        "r21,r22,r23,r24,r25,r26,r27,r28,r29,r30" }, deliveries)
      assert.are.same({ sequence = seqs[30] }, store:get("shardId-000000000000"))
      local s = c:stats()
      assert.are.equal(2, s.handler_failures)
      assert.are.equal(30, s.records)
      assert.matches("cannot handle r15", s.recent_errors[1].message)
    end)

    it("after max_handler_attempts on_error decides: skip moves on, stop ends the shard", function()
      create("onerror", 1)
      local seqs = put_n("onerror", 20)
      local function run_with(decision)
        local store = kinesis.checkpoints.memory()
        local seen, asked = {}, 0
        local c = client:consumer { stream = "onerror", store = store, max_records = 5, retry_delay = 0.01,
          max_handler_attempts = 2, idle_time_between_reads = 0.2, stop_after_idle = 0.5,
          on_error = function(err, ctx)
            asked = asked + 1
            assert.are.equal(2, ctx.attempt)
            assert.matches("bad r7", tostring(err))
            return decision
          end,
          handler = function(records)
            for _, r in ipairs(records) do
              seen[#seen + 1] = r.Data
              if r.Data == "r7" then error("bad r7") end
            end
          end }
        assert(run_bounded(c))
        return store:get("shardId-000000000000"), asked, c:stats()
      end
      local cp, asked = run_with("skip")
      assert.are.equal(1, asked)
      assert.are.same({ sequence = seqs[20] }, cp)
      local s
      cp, asked, s = run_with("stop")
      assert.are.equal(1, asked)
      assert.are.same({ sequence = seqs[5] }, cp)
      assert.are.equal("failed", s.shards["shardId-000000000000"].state)
    end)

    it("a deleted stream ends the run with its error, each error logged once per shard", function()
      create("deleted", 2)
      put_n("deleted", 10)
      local events, got = {}, 0
      local c = client:consumer { stream = "deleted", store = kinesis.checkpoints.memory(), shard_sync_interval = 0.5,
        idle_time_between_reads = 0.2, retry_delay = 0.05, max_retry_delay = 0.2,
        log = function(ev) events[#events + 1] = ev end,
        handler = function(records) got = got + #records end }
      local ok, err
      kinesis.run(function()
        local t = kinesis.spawn(function() return c:run() end)
        while got < 10 do kinesis.sleep(0.05) end
        assert(client:delete_stream { StreamName = "deleted" })
        local _
        _, ok, err = t:wait()
      end)
      assert.is_nil(ok)
      assert.are.equal("ResourceNotFoundException", err.code)
      assert.are.equal("stopped", c:stats().state)
      local seen = {}
      for _, ev in ipairs(events) do
        if ev.event == "consumer_error" then
          local key = tostring(ev.shard_id) .. " " .. tostring(ev.err and ev.err.code) .. " " .. tostring(ev.where)
          assert.is_nil(seen[key], "logged twice: " .. key)
          seen[key] = true
        end
      end
      assert.is_truthy(seen["nil ResourceNotFoundException list_shards"])
    end)

    it("recovers from an expired iterator after the last record processed, losing nothing", function()
      create("expire", 1)
      put_n("expire", 30)
      local got = {}
      -- manual mode and no checkpoint: the new iterator must come from the
      -- last record processed, not from the (absent) checkpoint
      local c = client:consumer { stream = "expire", store = kinesis.checkpoints.memory(), max_records = 10,
        checkpoint = "manual",
        idle_time_between_reads = 0.2, stop_after_idle = 0.5,
        handler = function(records)
          for _, r in ipairs(records) do got[#got + 1] = r.Data end
          if #got == 10 then
            -- a handler slower than an iterator's life: age the server's clock
            os.execute("kill -USR2 " .. srv.pid)
            kinesis.sleep(0.3)
          end
        end }
      assert(run_bounded(c))
      local want = {}
      for i = 1, 30 do want[i] = "r" .. i end
      assert.are.same(want, got)
      assert.is_true(c:stats().expired_iterators >= 1)
    end)
  end)

  describe("examples/consumer.lua", function()
    it("writes, reads back every record with a progress line, and exits 0", function()
      local out = sh("cd " .. q(ROOT) .. " && env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY KINESIS_ENDPOINT="
        .. q(srv.endpoint) .. " " .. LUA .. " examples/consumer.lua 2>&1; echo \"__rc=$?\"")
      assert.matches("__rc=0", out)
      assert.matches("read 300 records %(%d+ bytes%) from consumer%-example%-%d+ with %d+ checkpoints", out)
      assert.matches("consumer consumer%-example: 300 records %(", out)
    end)
  end)

  describe("on LuaJIT", function()
    it("a consumer process on LuaJIT reads every record and resumes from its file", function()
      create("jit", 2)
      local wlog, out, store = fresh("jit.written"), fresh("jit.out"), fresh("jit.cp")
      feed("jit", 5, 8, wlog, 3, 0)
      local env = "LUA_CPATH=" .. q(ROOT .. "/build/5.1/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;") .. " "
      local cmd = consume_cmd { stream = "jit", store = store, out = out, stop_after_idle = 1 }:gsub("^lua5%.4", env .. "luajit")
      local stdout = sh(cmd .. " 2>&1")
      assert.is_truthy(stdout:find("DONE true", 1, true), "consumer process said: " .. stdout)
      assert.matches("on LuaJIT", stdout)
      assert.are.equal(0, verify(written_counts(wlog), handled_list(out)))
      -- a second run finds everything checkpointed: nothing handed over again
      local before = count_lines(out)
      stdout = sh(cmd .. " 2>&1")
      assert.is_truthy(stdout:find("DONE true records=0", 1, true), "consumer process said: " .. stdout)
      assert.are.equal(before, count_lines(out))
    end)
  end)

  describe("inside kinesis.run", function()
    it("reads beside a producer task of the same run; stop() makes run() return", function()
      create("inrun", 3)
      local got, stopped_at = {}, nil
      local c
      local results = kinesis.run(function()
        c = client:consumer { stream = "inrun", store = kinesis.checkpoints.memory(), idle_time_between_reads = 0.2,
          handler = function(records, ctx)
            assert.is_string(ctx.shard_id)
            assert.is_number(ctx.millis_behind)
            for _, r in ipairs(records) do got[r.Data] = (got[r.Data] or 0) + 1 end
          end }
        local reader = kinesis.spawn(function() return c:run() end)
        for b = 1, 10 do
          local entries = {}
          for i = 1, 20 do entries[i] = { PartitionKey = "k" .. i, Data = "b" .. b .. "r" .. i } end
          assert(client:put_records { StreamName = "inrun", Records = entries })
          kinesis.sleep(0.05)
        end
        for _ = 1, 200 do
          local n = 0
          for _ in pairs(got) do n = n + 1 end
          if n == 200 then break end
          kinesis.sleep(0.05)
        end
        assert.are.equal("running", c:stats().state)
        c:stop()
        stopped_at = kinesis.run and require("kinesis.scheduler").now()
        return { reader:wait() }
      end)
      assert.are.same({ true, true }, results)
      assert.is_number(stopped_at)
      local n = 0
      for _, count in pairs(got) do
        n = n + 1
        assert.are.equal(1, count)
      end
      assert.are.equal(200, n)
      local s = c:stats()
      assert.are.equal("stopped", s.state)
      assert.are.equal(200, s.records)
      assert.are.equal(3, s.checkpoints >= 3 and 3 or s.checkpoints)
    end)
  end)

  describe("enhanced fan-out", function()
    it("reads through a registered stream consumer with the same guarantees across a split", function()
      create("fanout", 2)
      local wlog = fresh("fanout.written")
      feed("fanout", 8, 10, wlog, 3, 0)
      assert(client:split_shard { StreamName = "fanout", ShardToSplit = "shardId-000000000000",
        NewStartingHashKey = "85070591730234615865843651857942052864" })
      wait_active("fanout")
      feed("fanout", 8, 10, wlog, 3, 0)
      local handled, violations = {}, {}
      local store = kinesis.checkpoints.memory()
      local c = client:consumer { stream = "fanout", fan_out = "fanout-app", store = store,
        stop_after_idle = 2, event_timeout = 10,
        handler = function(records, ctx)
          -- the split's children (2 and 3) only after shard 0's end
          if ctx.shard_id ~= "shardId-000000000000" and ctx.shard_id ~= "shardId-000000000001" then
            local cp = store:get("shardId-000000000000")
            if not (cp and cp.sequence == "SHARD_END") then violations[#violations + 1] = ctx.shard_id end
          end
          for _, r in ipairs(records) do
            local key, n = cdata.parse(r.Data)
            handled[#handled + 1] = { shard = ctx.shard_id, seq = r.SequenceNumber, key = key or "BAD", n = n }
          end
        end }
      local ok, err = run_bounded(c)
      assert.is_true(ok, tostring(err))
      local written = written_counts(wlog)
      assert.are.equal(0, verify(written, handled))
      assert.are.same({}, violations)
      local s = c:stats()
      assert.is_true(s.subscriptions >= 3, "one subscription per shard at least")
      assert.is_true(s.get_records == 0, "no GetRecords polling")
      local arn = assert(client:describe_stream_summary { StreamName = "fanout" }).StreamDescriptionSummary.StreamARN
      local d = assert(client:describe_stream_consumer { StreamARN = arn, ConsumerName = "fanout-app" })
      assert.are.equal("ACTIVE", d.ConsumerDescription.ConsumerStatus)
      -- a second run with the same store subscribes after the checkpoints:
      -- only the records written since are handed over
      feed("fanout", 8, 4, wlog, 2, 0)
      local first = #handled
      local c2 = client:consumer { stream = "fanout", fan_out = "fanout-app", store = store,
        stop_after_idle = 2, event_timeout = 10,
        handler = function(records, ctx)
          for _, r in ipairs(records) do
            local key, n = cdata.parse(r.Data)
            handled[#handled + 1] = { shard = ctx.shard_id, seq = r.SequenceNumber, key = key or "BAD", n = n }
          end
        end }
      ok, err = run_bounded(c2)
      assert.is_true(ok, tostring(err))
      assert.are.equal(0, verify(written_counts(wlog), handled))
      assert.is_true(#handled > first)
    end)
  end)
end)
