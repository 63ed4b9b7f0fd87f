-- kinesis.checkpoints.dynamodb against dynalite: the lease table in the KCL's
-- format, conditional-write conflicts with one winner and no lost checkpoint,
-- expiry by each worker's own monotonic clock, taking and stealing targets,
-- renewals and checkpoints serialized per lease; and kinesis.leases' rules.

local peers = require "support.peers"
local kinesis = require "kinesis"
local leases = require "kinesis.leases"
local dynamodb_store = require("kinesis.checkpoints.dynamodb").new
local format = string.format

local function shards(n)
  local out = {}
  for i = 0, n - 1 do
    out[#out + 1] = { ShardId = format("shardId-%012d", i), initial = { sequence = "TRIM_HORIZON" },
      HashKeyRange = { StartingHashKey = tostring(i), EndingHashKey = tostring(i) } }
  end
  return out
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("kinesis.leases rules", function()
  local function L(key, owner, seen_at)
    return { key = key, owner = owner, counter = 1, seen_at = seen_at or 0 }
  end
  local opts = { failover = 10, max_steal = 1 }

  it("targets ceil(leases / workers) and takes free leases first", function()
    local ls = { L("a"), L("b"), L("c", "w2"), L("d", "w2"), L("e", "w3") }
    local p = leases.plan(ls, "me", {}, 1, opts)
    assert.equal(3, p.workers)
    assert.equal(2, p.target)
    assert.equal(2, #p.take)
    for _, l in ipairs(p.take) do assert.is_nil(l.owner) end
    assert.equal(0, #p.steal)
  end)

  it("counts an owner whose leases all expired as gone, and takes those leases", function()
    local ls = { L("a", "dead", 0), L("b", "dead", 0), L("c", "w2", 20) }
    local p = leases.plan(ls, "me", {}, 20.5, opts)
    assert.equal(2, p.workers)   -- w2 and me
    assert.equal(2, p.target)
    assert.equal(2, #p.take)
    assert.equal("dead", p.take[1].owner)
  end)

  it("takes leases unseen for 3 x failover before merely expired ones", function()
    local ls = { L("old", "x", 0), L("new", "y", 25) }
    for _ = 1, 20 do
      local p = leases.plan(ls, "me", {}, 36, { failover = 10, max_leases = 1 })
      assert.equal(1, #p.take)
      assert.equal("old", p.take[1].key)
    end
  end)

  it("steals one lease from the most loaded worker only when nothing is free", function()
    local ls = {}
    for i = 1, 5 do ls[#ls + 1] = L("a" .. i, "big", 5) end
    for i = 1, 3 do ls[#ls + 1] = L("b" .. i, "mid", 5) end
    local p = leases.plan(ls, "me", {}, 6, opts)
    assert.equal(3, p.target)
    assert.equal(0, #p.take)
    assert.equal(1, #p.steal)
    assert.equal("big", p.steal[1].owner)
    assert.equal("big", p.victim)
    p = leases.plan(ls, "me", {}, 6, { failover = 10, max_steal = 2 })
    assert.equal(2, #p.steal)
    -- balanced: nothing to steal
    local even = { L("a", "w1", 5), L("b", "w2", 5) }
    p = leases.plan(even, "me", {}, 6, opts)
    assert.equal(0, #p.steal)
  end)

  it("caps the target at max_leases", function()
    local ls = { L("a"), L("b"), L("c") }
    local p = leases.plan(ls, "me", {}, 0, { failover = 10, max_leases = 2 })
    assert.equal(2, p.target)
    assert.equal(2, #p.take)
  end)

  it("maps checkpoints to the KCL's (checkpoint, checkpointSubSequenceNumber) and back", function()
    local function trip(cp)
      local row = leases.row_of_cp(cp)
      row.leaseKey = { S = "k" }
      return row, leases.cp_of_row(row)
    end
    local row, back = trip { sequence = "123" }
    assert.same({ S = "123" }, row.checkpoint)
    assert.same({ N = leases.WHOLE_RECORD }, row.checkpointSubSequenceNumber)
    assert.same({ sequence = "123" }, back)
    row, back = trip { sequence = "123", sub_sequence = 4 }
    assert.same({ N = "4" }, row.checkpointSubSequenceNumber)
    assert.same({ sequence = "123", sub_sequence = 4 }, back)
    row, back = trip { sequence = "TRIM_HORIZON" }
    assert.same({ N = "0" }, row.checkpointSubSequenceNumber)
    assert.same({ sequence = "TRIM_HORIZON" }, back)
    -- a KCL row for a plain record: (seq, 0)
    assert.same({ sequence = "9", sub_sequence = 0 },
      leases.cp_of_row { checkpoint = { S = "9" }, checkpointSubSequenceNumber = { N = "0" } })
  end)
end)

describe("kinesis.checkpoints.dynamodb against dynalite", function()
  local srv, db
  local n = 0

  -- A store on its own table, with a clock the spec moves by hand.
  local function store(tbl, worker, clock, extra)
    local opts = { table = tbl, client = db, worker_id = worker, clock = clock.now, failover_time = 10 }
    for k, v in pairs(extra or {}) do opts[k] = v end
    local s = dynamodb_store(opts)
    assert(s:open { stream = "s" })
    return s
  end
  local function clock(t)
    local c = { t = t or 0 }
    c.now = function() return c.t end
    return c
  end
  local function fresh_table()
    n = n + 1
    return "leases-" .. n
  end
  local function row(tbl, key)
    return assert(db:get_item { TableName = tbl, Key = { leaseKey = { S = key } }, ConsistentRead = true }).Item
  end

  lazy_setup(function()
    srv = peers.start("dynalite", { args = { "--createTableMs", "10", "--deleteTableMs", "10", "--updateTableMs", "10" } })
    db = assert(kinesis.dynamodb.new { endpoint = srv.endpoint, region = peers.region, credentials = peers.credentials })
  end)
  lazy_teardown(function()
    if db then db:close() end
    if srv then srv.stop() end
  end)

  it("creates the lease table when missing: hash key leaseKey, on demand", function()
    local tbl = fresh_table()
    store(tbl, "w1", clock())
    local t = assert(db:describe_table { TableName = tbl }).Table
    assert.equal("ACTIVE", t.TableStatus)
    assert.same({ { AttributeName = "leaseKey", KeyType = "HASH" } }, t.KeySchema)
    assert.same({ { AttributeName = "leaseKey", AttributeType = "S" } }, t.AttributeDefinitions)
    assert.equal("PAY_PER_REQUEST", t.BillingModeSummary.BillingMode)
    -- a second worker finds it and creates nothing
    store(tbl, "w2", clock())
  end)

  it("writes leases with the KCL's attribute names and types", function()
    local tbl = fresh_table()
    local s = store(tbl, "w1", clock())
    local list = shards(2)
    list[3] = { ShardId = "shardId-000000000002", ParentShardId = "shardId-000000000000",
      AdjacentParentShardId = "shardId-000000000001", initial = { sequence = "TRIM_HORIZON" },
      HashKeyRange = { StartingHashKey = "0", EndingHashKey = "340282366920938463463374607431768211455" } }
    assert(s:sync_shards(list))
    local item = row(tbl, "shardId-000000000002")
    assert.same({ S = "shardId-000000000002" }, item.leaseKey)
    assert.same({ N = "0" }, item.leaseCounter)
    assert.same({ N = "0" }, item.ownerSwitchesSinceCheckpoint)
    assert.same({ S = "TRIM_HORIZON" }, item.checkpoint)
    assert.same({ N = "0" }, item.checkpointSubSequenceNumber)
    assert.same({ "shardId-000000000000", "shardId-000000000001" }, (function()
      local ss = item.parentShardId.SS
      table.sort(ss)
      return ss
    end)())
    assert.same({ S = "340282366920938463463374607431768211455" }, item.endingHashKey)
    assert.is_nil(item.leaseOwner)
    local held = assert(s:acquire())
    assert.equal(3, count(held))
    item = row(tbl, "shardId-000000000000")
    assert.same({ S = "w1" }, item.leaseOwner)
    assert.same({ N = "1" }, item.leaseCounter)
    assert(s:set("shardId-000000000000", { sequence = "49590338271490256608559692538361571095921575989136588898", sub_sequence = 2 }))
    item = row(tbl, "shardId-000000000000")
    assert.same({ S = "49590338271490256608559692538361571095921575989136588898" }, item.checkpoint)
    assert.same({ N = "2" }, item.checkpointSubSequenceNumber)
    assert.same({ N = "2" }, item.leaseCounter)
    assert(s:set("shardId-000000000000", { sequence = "SHARD_END" }))
    item = row(tbl, "shardId-000000000000")
    assert.same({ S = "SHARD_END" }, item.checkpoint)
    assert.same({ "shardId-000000000002" }, item.childShardIds.SS)
    -- release: the owner removed, the counter moved
    assert(s:release("shardId-000000000001"))
    item = row(tbl, "shardId-000000000001")
    assert.is_nil(item.leaseOwner)
    assert.same({ N = "2" }, item.leaseCounter)
    assert.is_false(s:holds("shardId-000000000001"))
  end)

  it("gives a lease two workers take at once to one of them, and loses no checkpoint", function()
    local tbl = fresh_table()
    local c = clock()
    local a, b = store(tbl, "A", c), store(tbl, "B", c)
    assert(a:sync_shards(shards(1)))
    -- both read the table before either writes
    assert(a:_scan())
    assert(b:_scan())
    local l_a, l_b = a.view["shardId-000000000000"], b.view["shardId-000000000000"]
    a:_take(l_a, false)
    b:_take(l_b, false)
    assert.is_not_nil(a.held["shardId-000000000000"])
    assert.is_nil(b.held["shardId-000000000000"])
    assert(a:set("shardId-000000000000", { sequence = "100" }))
    -- the loser cannot write, and its attempt changes nothing
    local ok, err = b:set("shardId-000000000000", { sequence = "50" })
    assert.is_nil(ok)
    assert.equal("LeaseLost", err.code)
    -- the same with renewals: B, once it took it by expiry, renews; A's stale renewal loses
    c.t = 11
    assert.equal(0, count(assert(b:acquire())))   -- B saw the counter move: alive
    c.t = 22
    local held = assert(b:acquire())
    assert.is_true(held["shardId-000000000000"])
    a:_renew("shardId-000000000000")
    assert.is_nil(a.held["shardId-000000000000"])
    assert.is_false(a:holds("shardId-000000000000"))
    ok, err = a:set("shardId-000000000000", { sequence = "200" })
    assert.equal("LeaseLost", err.code)
    assert.same({ sequence = "100" }, b:get("shardId-000000000000"))
    assert.same({ S = "100" }, row(tbl, "shardId-000000000000").checkpoint)
  end)

  it("gives each of 16 leases to exactly one of two workers acquiring concurrently", function()
    local tbl = fresh_table()
    local a = dynamodb_store { table = tbl, client = db, worker_id = "A", max_leases = 16 }
    local b = dynamodb_store { table = tbl, client = db, worker_id = "B", max_leases = 16 }
    kinesis.run(function()
      assert(a:open { stream = "s" })
      assert(b:open { stream = "s" })
      assert(a:sync_shards(shards(16)))
      assert(b:sync_shards(shards(16)))
      -- both read the table, then both take every free lease at the same time
      assert(a:_scan())
      assert(b:_scan())
      a.taken_at, b.taken_at = nil, nil
      local ta = kinesis.spawn(function() return a:acquire() end)
      local tb = kinesis.spawn(function() return b:acquire() end)
      kinesis.wait_all { ta, tb }
    end)
    local both = 0
    for i = 0, 15 do
      local key = format("shardId-%012d", i)
      local owner = row(tbl, key).leaseOwner.S
      local ha, hb = a.held[key] ~= nil, b.held[key] ~= nil
      assert.is_true(ha ~= hb, key .. " held by exactly one")
      assert.equal(ha and "A" or "B", owner)
      if ha then both = both + 1 end
    end
    -- each tried all 16 (its target, seeing nobody else): every race had one winner
    assert.equal(16, a.counters.takes + b.counters.takes)
    assert.is_true(both > 0 and both < 16, "the two requests streams interleaved: A won " .. both)
  end)

  it("expires a lease by the observer's own monotonic clock, whatever the other's clock says", function()
    local tbl = fresh_table()
    local ca, cb = clock(5000), clock(-3)    -- unrelated clocks
    local a = store(tbl, "A", ca)
    local b = store(tbl, "B", cb, { take_interval = 0 })
    assert(a:sync_shards(shards(1)))
    assert.equal(1, count(assert(a:acquire())))
    -- B sees the lease owned and alive: no take, no steal (A holds exactly its share)
    assert.equal(0, count(assert(b:acquire())))
    cb.t = cb.t + 6
    assert.equal(0, count(assert(b:acquire())))
    -- A renews (its counter moves): B's observation starts over
    ca.t = ca.t + 3.5
    assert(a:acquire())
    cb.t = cb.t + 6
    assert.equal(0, count(assert(b:acquire())))
    -- A stops renewing; 10 s of B's clock after B last saw the counter move, B takes it
    cb.t = cb.t + 9.5
    assert.equal(0, count(assert(b:acquire())))
    cb.t = cb.t + 0.6
    local held = assert(b:acquire())
    assert.is_true(held["shardId-000000000000"])
    assert.same({ S = "B" }, row(tbl, "shardId-000000000000").leaseOwner)
    assert.same({ N = "1" }, row(tbl, "shardId-000000000000").ownerSwitchesSinceCheckpoint)
    -- A's own clock already told it to stop before B could take it
    ca.t = ca.t + 9
    assert.is_false(a:holds("shardId-000000000000"))
  end)

  it("balances 8 leases 3/3/2 by taking, then stealing one at a time from the most loaded", function()
    local tbl = fresh_table()
    local c = clock()
    local a = store(tbl, "A", c)
    assert(a:sync_shards(shards(8)))
    assert.equal(8, count(assert(a:acquire())))
    local b = store(tbl, "B", c)
    local function tick(...)
      c.t = c.t + 3.4
      for _, s in ipairs { ... } do assert(s:acquire()) end
    end
    -- B: target ceil(8/2) = 4, nothing free: one stolen per pass, from A
    tick(b, a)
    assert.equal(1, b.counters.steals)
    assert.equal(4, b.last_plan.target)
    assert.equal("A", b.last_plan.victim)
    -- a stolen lease is used only once its old owner has stopped for sure
    local stolen = b:stats().held[1]
    assert.is_false(b:holds(stolen))
    for _ = 1, 3 do tick(a, b) end
    assert.is_true(b:holds(stolen))
    -- the victim learns of the last steal at its next renewal
    tick(a)
    assert.equal(4, #b:stats().held)
    assert.equal(4, #a:stats().held)
    local cc = store(tbl, "C", c)
    for _ = 1, 6 do tick(a, b, cc) end
    tick(a, b)
    local counts = { #a:stats().held, #b:stats().held, #cc:stats().held }
    table.sort(counts)
    assert.same({ 2, 3, 3 }, counts)
    -- C's share is 3, but once A and B are down to 3 nobody has more than
    -- the target: C stops at 2 instead of churning leases back and forth
    assert.equal(2, cc.counters.steals)
    assert.equal(2, #cc:stats().held)
    -- every lease has exactly one holder
    local seen = {}
    for _, s in ipairs { a, b, cc } do
      for _, key in ipairs(s:stats().held) do
        assert.is_nil(seen[key], key)
        seen[key] = true
      end
    end
    assert.equal(8, count(seen))
  end)

  it("serializes renewals and checkpoints of one lease: they never race on leaseCounter", function()
    local tbl = fresh_table()
    local s = dynamodb_store { table = tbl, client = db, worker_id = "A", failover_time = 0.3 }
    local failures, done = {}, 0
    kinesis.run(function()
      assert(s:open { stream = "s" })
      assert(s:sync_shards(shards(1)))
      assert.equal(1, count(assert(s:acquire())))
      local tasks = {}
      tasks[1] = kinesis.spawn(function()
        for i = 1, 40 do
          local ok, err = s:set("shardId-000000000000", { sequence = tostring(1000 + i) })
          if not ok then failures[#failures + 1] = err end
          done = done + 1
        end
      end)
      tasks[2] = kinesis.spawn(function()
        for _ = 1, 40 do
          s.held["shardId-000000000000"].renewed_at = -1e9   -- due: renew every pass
          assert(s:acquire())
        end
      end)
      kinesis.wait_all(tasks)
    end)
    assert.same({}, failures)
    assert.equal(40, done)
    local item = row(tbl, "shardId-000000000000")
    assert.same({ S = "1040" }, item.checkpoint)
    -- every write moved the counter by one: 1 take + 40 checkpoints + the renewals
    assert.equal(1 + 40 + s.counters.renewals, tonumber(item.leaseCounter.N))
    assert.is_true(s.counters.renewals > 0)
  end)

  it("never moves a checkpoint backwards and refuses bad checkpoints before sending", function()
    local tbl = fresh_table()
    local s = store(tbl, "A", clock())
    assert(s:sync_shards(shards(1)))
    assert(s:acquire())
    assert(s:set("shardId-000000000000", { sequence = "500", sub_sequence = 3 }))
    local before = s.counters.requests
    assert(s:set("shardId-000000000000", { sequence = "499" }))
    assert(s:set("shardId-000000000000", { sequence = "500", sub_sequence = 1 }))
    assert.equal(before, s.counters.requests)
    assert.same({ sequence = "500", sub_sequence = 3 }, s:get("shardId-000000000000"))
    assert.has_error(function() s:set("shardId-000000000000", { sequence = "nope" }) end)
    assert.has_error(function() dynamodb_store { table = "x" } end)
    assert.has_error(function() dynamodb_store { table = "ok-name", failover_time = -1 } end)
  end)

  it("reads a table a KCL worker wrote exactly, and takes its expired leases", function()
    local tbl = fresh_table()
    local c = clock()
    local s = store(tbl, "lua-1", c)
    local function put(item) assert(db:put_item { TableName = tbl, Item = item }) end
    -- shard 0 split into 1 and 2 long ago: 0's row is gone, 1 finished, 2 mid-shard
    put { leaseKey = { S = "shardId-000000000001" }, leaseOwner = { S = "kcl:1" }, leaseCounter = { N = "12" },
      ownerSwitchesSinceCheckpoint = { N = "0" }, checkpoint = { S = "SHARD_END" }, checkpointSubSequenceNumber = { N = "0" },
      parentShardId = { SS = { "shardId-000000000000" } }, childShardIds = { SS = { "shardId-000000000003" } } }
    put { leaseKey = { S = "shardId-000000000002" }, leaseOwner = { S = "kcl:1" }, leaseCounter = { N = "907" },
      ownerSwitchesSinceCheckpoint = { N = "2" }, checkpoint = { S = "49590338271490256608559692538361571095921575989136588898" },
      checkpointSubSequenceNumber = { N = "5" }, parentShardId = { SS = { "shardId-000000000000" } },
      pendingCheckpoint = { S = "49590338271490256608559692538361571095921575989136588899" },
      pendingCheckpointSubSequenceNumber = { N = "0" } }
    put { leaseKey = { S = "shardId-000000000003" }, leaseCounter = { N = "0" }, ownerSwitchesSinceCheckpoint = { N = "0" },
      checkpoint = { S = "TRIM_HORIZON" }, checkpointSubSequenceNumber = { N = "0" },
      parentShardId = { SS = { "shardId-000000000001" } } }
    local cps = assert(s:list())
    assert.same({
      ["shardId-000000000000"] = { sequence = "SHARD_END" },   -- no row, an ancestor of rows: finished
      ["shardId-000000000001"] = { sequence = "SHARD_END" },
      ["shardId-000000000002"] = { sequence = "49590338271490256608559692538361571095921575989136588898", sub_sequence = 5 },
      ["shardId-000000000003"] = { sequence = "TRIM_HORIZON" },
    }, cps)
    -- the free child is taken now; the KCL worker's live lease only once it stopped moving
    local held = assert(s:acquire())
    assert.same({ ["shardId-000000000003"] = true }, held)
    c.t = c.t + 10.5
    held = assert(s:acquire())
    assert.is_true(held["shardId-000000000002"])
    local item = row(tbl, "shardId-000000000002")
    assert.same({ S = "lua-1" }, item.leaseOwner)
    assert.same({ N = "908" }, item.leaseCounter)
    assert.same({ N = "3" }, item.ownerSwitchesSinceCheckpoint)
    assert.same({ sequence = "49590338271490256608559692538361571095921575989136588898", sub_sequence = 5 },
      s:get("shardId-000000000002"))
    assert(s:set("shardId-000000000002", { sequence = "49590338271490256608559692538361571095921575989136588900" }))
    item = row(tbl, "shardId-000000000002")
    assert.same({ N = "0" }, item.ownerSwitchesSinceCheckpoint)
    assert.is_nil(item.pendingCheckpoint)
    assert.is_nil(item.pendingCheckpointSubSequenceNumber)
    -- the finished lease is neither taken nor counted
    assert.is_false(s:holds("shardId-000000000001"))
    assert.same({ S = "kcl:1" }, row(tbl, "shardId-000000000001").leaseOwner)
  end)

  it("deletes finished parents once their children started, and still reports them finished", function()
    local tbl = fresh_table()
    local c = clock()
    local s = store(tbl, "A", c, { cleanup_interval = 0 })
    local list = shards(1)
    list[2] = { ShardId = "shardId-000000000001", ParentShardId = "shardId-000000000000", initial = { sequence = "TRIM_HORIZON" } }
    assert(s:sync_shards(list))
    assert(s:acquire())
    assert(s:set("shardId-000000000000", { sequence = "SHARD_END" }))
    assert(s:release("shardId-000000000000"))
    c.t = c.t + 4
    assert(s:acquire())
    assert.is_not_nil(row(tbl, "shardId-000000000000"))   -- the child has not started yet
    assert(s:set("shardId-000000000001", { sequence = "7" }))
    c.t = c.t + 4
    assert(s:acquire())
    assert.is_nil(row(tbl, "shardId-000000000000"))
    local cps = assert(s:list())
    assert.same({ sequence = "SHARD_END" }, cps["shardId-000000000000"])
    -- and sync does not bring the finished parent back
    assert(s:sync_shards(list))
    assert.is_nil(row(tbl, "shardId-000000000000"))
  end)
end)
