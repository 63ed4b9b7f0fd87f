-- bench/leases.lua - the lease store (kinesis.checkpoints.dynamodb) against a
-- private dynalite: conditional lease operations per second (renewals,
-- checkpoints) as a ratio to plain UpdateItem calls on the same table and
-- connection; and the DynamoDB requests per shard per minute a worker makes
-- at steady state (simulated time: the store's clock is injected), idle and
-- checkpointing every 1.5 s per shard, beside the KCL's schedule for the same.
--
--   lua5.4 bench/leases.lua WORKDIR [SECONDS]
--
-- Prints { renew_ops, checkpoint_ops, update_item_ops, ratio_renew, ratio_checkpoint,
-- idle_per_shard_min, busy_per_shard_min, kcl_idle_per_shard_min, kcl_busy_per_shard_min }.

local common = require "common"
local kinesis = require "kinesis"
local store_new = require("kinesis.checkpoints.dynamodb").new

local WORK = assert(arg[1], "usage: leases.lua WORKDIR [SECONDS]")
local SECONDS = tonumber(arg[2]) or 1

-- dynalite on a free port, stopped on exit
local function free_port()
  local socket = require "socket"
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return port
end
local port = free_port()
local log = WORK .. "/dynalite-" .. port .. ".log"
local pid = tonumber(io.popen("node node_modules/dynalite/cli.js --port " .. port ..
  " --createTableMs 5 > '" .. log .. "' 2>&1 & echo $!"):read("*l"))
local function stop() os.execute("kill " .. pid .. " 2>/dev/null") end

local endpoint = "http://127.0.0.1:" .. port
local db
for _ = 1, 100 do
  db = kinesis.dynamodb.new { endpoint = endpoint, region = "us-east-1",
    credentials = { access_key_id = "AKIDBENCH", secret_access_key = "bench" }, retry = { mode = "off" } }
  if db:list_tables {} then break end
  os.execute("sleep 0.1")
end

local ok, err = pcall(function()
  -- lease operations per second, beside plain UpdateItem
  local s = store_new { table = "bench-ops", client = db, worker_id = "bench" }
  assert(s:open {})
  assert(s:sync_shards { { ShardId = "shardId-000000000000", initial = { sequence = "TRIM_HORIZON" } } })
  assert(s:acquire())
  local key = "shardId-000000000000"
  local seq = 1000
  local function renew()
    s:_renew(key)
  end
  local function checkpoint()
    seq = seq + 1
    assert(s:set(key, { sequence = tostring(seq) }))
  end
  local n = 0
  local function raw_update()
    n = n + 1
    assert(db:update_item { TableName = "bench-ops", Key = { leaseKey = { S = "plain" } },
      AttributeUpdates = { leaseCounter = { Action = "PUT", Value = { N = tostring(n) } } } })
  end
  local results = {}
  for _, case in ipairs { { "update_item", raw_update }, { "renew", renew }, { "checkpoint", checkpoint },
      { "update_item2", raw_update } } do
    local rate = common.rate(case[2], SECONDS, 1, 20)
    results[case[1]] = rate
  end
  local base = (results.update_item + results.update_item2) / 2

  -- requests per shard per minute at steady state, 8 leases, 5 simulated minutes
  local function steady(tbl, checkpoint_every)
    local clock = { t = 0 }
    local w = store_new { table = tbl, client = db, worker_id = "steady", clock = function() return clock.t end,
      cleanup_interval = 60 }
    assert(w:open {})
    local shards = {}
    for i = 0, 7 do shards[#shards + 1] = { ShardId = string.format("shardId-%012d", i), initial = { sequence = "TRIM_HORIZON" } } end
    assert(w:sync_shards(shards))
    assert(w:acquire())
    local start = w.counters.requests
    local minutes, step = 5, 0.1
    local next_renew, next_cp, cps = 0, 0, 0
    while clock.t < minutes * 60 do
      clock.t = clock.t + step
      if clock.t >= next_renew then
        assert(w:acquire())
        next_renew = clock.t + w.renew_interval
      end
      if checkpoint_every and clock.t >= next_cp then
        cps = cps + 1
        for _, sh in ipairs(shards) do assert(w:set(sh.ShardId, { sequence = tostring(1000 + cps) })) end
        next_cp = clock.t + checkpoint_every
      end
    end
    return (w.counters.requests - start) / (#shards * minutes)
  end
  local idle = steady("bench-idle", nil)
  local busy = steady("bench-busy", 1.5)
  -- the KCL's schedule: each lease renewed every failover/3 - 25 ms, the
  -- table scanned every 2 x (failover + 25 ms), plus the same checkpoints
  local renew_per_min = 60 / (10 / 3 - 0.025)
  local scan_per_min = 60 / (2 * (10 + 0.025))
  local kcl_idle = renew_per_min + scan_per_min / 8
  local kcl_busy = kcl_idle + 60 / 1.5
  common.emit {
    renew_ops = results.renew, checkpoint_ops = results.checkpoint, update_item_ops = base,
    ratio_renew = results.renew / base, ratio_checkpoint = results.checkpoint / base,
    idle_per_shard_min = idle, busy_per_shard_min = busy,
    kcl_idle_per_shard_min = kcl_idle, kcl_busy_per_shard_min = kcl_busy,
  }
end)
stop()
if not ok then error(err, 0) end
