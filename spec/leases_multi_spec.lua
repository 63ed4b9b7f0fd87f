-- Many workers, one stream, end to end: three worker processes on one
-- 8-shard stream that a producer process keeps writing to, the leases in
-- dynalite. They balance 3/3/2; a kill -9 of one hands its leases over within
-- 2 x failover_time; a fourth joins and steals, never with a shard in two
-- handlers at once; a split and a merge happen meanwhile. Every record is
-- handled at least once, each key in write order, children after parents.

local peers = require "support.peers"
local kinesis = require "kinesis"

local ROOT = peers.root
-- files of this run only (the suite may run more than once at a time in one tree)
local TMP = peers.tmpdir("leases-multi")
local FAILOVER = 2
local q, sh, spawn_bg, alive, wait_exit = peers.quote, peers.sh, peers.spawn, peers.alive, peers.wait_exit

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local function fresh(name)
  local p = TMP .. "/" .. name
  os.remove(p)
  return p
end

describe("many workers on one stream", function()
  local ksrv, dsrv, client, db
  local STREAM, TABLE = "lease-e2e", "lease-e2e-table"
  local pids = {}

  lazy_setup(function()
    os.execute("mkdir -p " .. q(TMP))
    ksrv = peers.start("kinesis-local", { env = {
      CREATE_STREAM_DURATION = "10ms", SPLIT_SHARD_DURATION = "10ms", MERGE_SHARDS_DURATION = "10ms",
      SHARD_LIMIT = "100" } })
    dsrv = peers.start("dynalite", { args = { "--createTableMs", "10" } })
    client = peers.client(ksrv)
    db = assert(kinesis.dynamodb.new { endpoint = dsrv.endpoint, region = peers.region, credentials = peers.credentials })
  end)
  lazy_teardown(function()
    for _, pid in pairs(pids) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    if client then client:close() end
    if db then db:close() end
    if ksrv then ksrv.stop() end
    if dsrv then dsrv.stop() end
  end)

  -- owner -> number of unfinished leases, and the owner of each
  local function owners()
    local out, by_shard = {}, {}
    local items = {}
    local start
    repeat
      local page = db:scan { TableName = TABLE, ConsistentRead = true, ExclusiveStartKey = start }
      if not page then return {}, {} end
      for _, it in ipairs(page.Items or {}) do items[#items + 1] = it end
      start = page.LastEvaluatedKey
    until not start or next(start) == nil
    for _, it in ipairs(items) do
      if it.checkpoint.S ~= "SHARD_END" then
        local o = it.leaseOwner and it.leaseOwner.S or "-"
        out[o] = (out[o] or 0) + 1
        by_shard[it.leaseKey.S] = o
      end
    end
    return out, by_shard
  end

  local function wait_for(what, limit, pred)
    local deadline = kinesis.now() + limit
    while kinesis.now() < deadline do
      if pred() then return true end
      kinesis.sleep(0.1)
    end
    local o = owners()
    local parts = {}
    for k, v in pairs(o) do parts[#parts + 1] = k .. "=" .. v end
    error(what .. " not reached within " .. limit .. " s; owners: " .. table.concat(parts, " "))
  end

  it("balance, kill -9 takeover, a joining worker, resharding: every record, in order, one handler per shard", function()
    assert(client:create_stream { StreamName = STREAM, ShardCount = 8 })
    assert(client:wait("stream_exists", { StreamName = STREAM }, { delay = 0.05, max_attempts = 200 }))
    local wlog, stopfile = fresh("written"), fresh("stop")
    local feeder_cmd = "lua5.4 " .. q(ROOT .. "/spec/support/feeder.lua") .. " " .. q(ksrv.endpoint) .. " " ..
      q(STREAM) .. " 16 100000 " .. q(wlog) .. " 4 0.05 " .. q(stopfile)
    pids.feeder = spawn_bg(feeder_cmd, wlog .. ".out")
    local outs = {}
    local function start_worker(name)
      outs[name] = fresh(name)
      local opts = require("cjson").encode { endpoint = ksrv.endpoint, dynamodb = dsrv.endpoint, stream = STREAM,
        table = TABLE, worker = name, out = outs[name], failover = FAILOVER }
      pids[name] = spawn_bg("lua5.4 " .. q(ROOT .. "/spec/support/lease_worker.lua") .. " " .. q(opts), outs[name] .. ".stdout")
    end
    start_worker("w1")
    start_worker("w2")
    start_worker("w3")

    -- 3/3/2
    wait_for("a 3/3/2 split", 40, function()
      local o = owners()
      local counts = {}
      for owner, n in pairs(o) do
        if owner ~= "-" then counts[#counts + 1] = n else return false end
      end
      table.sort(counts)
      return #counts == 3 and counts[1] == 2 and counts[2] == 3 and counts[3] == 3
    end)
    -- a stolen lease is used only failover_time after the steal: wait until
    -- each worker has handled records of its own
    wait_for("records handled by every worker", 30, function()
      for _, name in ipairs { "w1", "w2", "w3" } do
        if read_file(outs[name]) == "" then return false end
      end
      return true
    end)

    -- kill -9 w1: its leases move within 2 x failover_time
    local _, before = owners()
    local had = 0
    for _, o in pairs(before) do if o == "w1" then had = had + 1 end end
    assert.is_true(had >= 2)
    os.execute("kill -9 " .. pids.w1)
    local killed_at = kinesis.now()
    pids.w1 = nil
    wait_for("the takeover of w1's leases", 20, function()
      local o = owners()
      return o.w1 == nil and o["-"] == nil
    end)
    local takeover = kinesis.now() - killed_at
    assert.is_true(takeover <= 2 * FAILOVER + 0.3, ("takeover took %.2f s"):format(takeover))

    -- a fourth worker joins and steals its share
    start_worker("w4")
    wait_for("w4's share", 40, function() return (owners().w4 or 0) >= 2 end)

    -- a split and a merge while everything runs
    local shards = {}
    for s in client:items("list_shards", { StreamName = STREAM }) do shards[#shards + 1] = assert(s) end
    assert(client:split_shard { StreamName = STREAM, ShardToSplit = shards[1].ShardId,
      NewStartingHashKey = assert(kinesis.split_point(shards[1])) })
    for _ = 1, 200 do
      if client:describe_stream_summary { StreamName = STREAM }.StreamDescriptionSummary.StreamStatus == "ACTIVE" then break end
      kinesis.sleep(0.05)
    end
    assert(client:merge_shards { StreamName = STREAM, ShardToMerge = shards[5].ShardId,
      AdjacentShardToMerge = shards[6].ShardId })
    kinesis.sleep(4)

    -- the producer stops; every record it wrote is handled
    io.open(stopfile, "w"):close()
    assert.is_true(wait_exit(pids.feeder, 60), "feeder stopped")
    pids.feeder = nil
    local written, total = {}, 0
    for key, n in read_file(wlog):gmatch("(%S+) (%d+)\n") do
      n = tonumber(n)
      written[key] = math.max(written[key] or 0, n)
      total = total + 1
    end
    assert.is_true(total > 500, "feeder wrote " .. total)
    local function handled()
      local rows = {}
      for _, name in ipairs { "w1", "w2", "w3", "w4" } do
        local i = 0
        for w, shard, seq, sub, key, n, t0, t1 in read_file(outs[name]):gmatch(
          "(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)\n") do
          i = i + 1
          rows[#rows + 1] = { worker = w, shard = shard, seq = seq, sub = sub, key = key, n = tonumber(n),
            t0 = tonumber(t0), t1 = tonumber(t1), i = i }
        end
      end
      table.sort(rows, function(a, b)
        if a.t0 ~= b.t0 then return a.t0 < b.t0 end
        if a.worker ~= b.worker then return a.worker < b.worker end
        return a.i < b.i
      end)
      return rows
    end
    local function covered(rows)
      local top = {}
      for _, h in ipairs(rows) do
        if h.n then top[h.key] = math.max(top[h.key] or 0, h.n) end
      end
      for key, n in pairs(written) do if (top[key] or 0) < n then return false end end
      return true
    end
    wait_for("every record handled", 60, function() return covered(handled()) end)
    for _, name in ipairs { "w2", "w3", "w4" } do os.execute("kill -TERM " .. pids[name]) end
    for _, name in ipairs { "w2", "w3", "w4" } do
      assert.is_true(wait_exit(pids[name], 30), name .. " stopped on SIGTERM")
      pids[name] = nil
      local said = read_file(outs[name] .. ".stdout")
      assert.is_truthy(said:find("DONE true", 1, true), name .. " said: " .. said)
      assert.is_nil(said:match("VIOLATION[^\n]*"))
    end
    assert.is_nil(read_file(outs.w1 .. ".stdout"):match("VIOLATION[^\n]*"))

    local rows = handled()
    -- each key in write order: a number is new only right after the last new one
    local top, dups = {}, 0
    for _, h in ipairs(rows) do
      assert.are_not.equal("BAD", h.key, "a record was not byte-exact")
      local t = top[h.key] or 0
      if h.n == t + 1 then top[h.key] = h.n
      elseif h.n <= t then dups = dups + 1
      else error(("key %s: record %d handled before record %d"):format(h.key, h.n, t + 1)) end
    end
    for key, n in pairs(written) do assert.equal(n, top[key], key) end
    -- one handler per shard at a time: batches of a shard never overlap across workers
    local by_shard = {}
    for _, h in ipairs(rows) do
      local b = by_shard[h.shard] or {}
      by_shard[h.shard] = b
      local last = b[#b]
      if not last or last.worker ~= h.worker or last.t0 ~= h.t0 then
        b[#b + 1] = { worker = h.worker, t0 = h.t0, t1 = h.t1 }
      end
    end
    local moves = 0
    for shard, batches in pairs(by_shard) do
      for i = 2, #batches do
        local a, b = batches[i - 1], batches[i]
        if a.worker ~= b.worker then
          moves = moves + 1
          assert.is_true(a.t1 <= b.t0, ("%s: %s's batch [%.3f, %.3f] overlaps %s's [%.3f, %.3f]"):format(
            shard, a.worker, a.t0, a.t1, b.worker, b.t0, b.t1))
        end
      end
    end
    assert.is_true(moves >= 2, "leases moved between workers")
    -- the children were read
    local children = 0
    for shard in pairs(by_shard) do
      local n = tonumber(shard:match("(%d+)$"))
      if n >= 8 then children = children + 1 end
    end
    assert.is_true(children >= 3, "records read from the split and merge children")
    print(("\n  takeover %.2f s, %d records written, %d handled (%d again), %d lease moves"):format(
      takeover, total, #rows, dups, moves))
  end)
end)
