-- lease_worker.lua - one worker of a multi-worker consumer for the lease
-- specs: a consumer on kinesis.checkpoints.dynamodb in its own process.
-- Each record handed to the handler is appended to the output log as
-- "worker shard seq sub key n t0 t1" (t0, t1: the batch's start and end on
-- the machine's monotonic clock, comparable across processes), flushed
-- before the handler returns. A shard handed over before each parent with a
-- lease row is at SHARD_END prints a VIOLATION line.
--   lua5.4 lease_worker.lua '<json options>'
-- options: endpoint, dynamodb, stream, table, worker, out, failover, stop_after_idle
local cjson = require "cjson"
local kinesis = require "kinesis"
local peers = require "support.peers"
local cdata = require "support.cdata"

local o = cjson.decode(arg[1])
local client = assert(kinesis.new { endpoint = o.endpoint, region = peers.region, credentials = peers.credentials })
local out = assert(io.open(o.out, "a"))
local store = kinesis.checkpoints.dynamodb { table = o.table, endpoint = o.dynamodb, failover_time = o.failover }

local checked = {}
local function check_parents(shard_id)
  if checked[shard_id] then return end
  checked[shard_id] = true
  local me
  for s in client:items("list_shards", { StreamName = o.stream }) do
    if s and s.ShardId == shard_id then me = s end
  end
  for _, p in ipairs { me and me.ParentShardId, me and me.AdjacentParentShardId } do
    if p then
      local row = store.db:get_item { TableName = o.table, Key = { leaseKey = { S = p } }, ConsistentRead = true }
      local item = row and row.Item
      if item and not (item.checkpoint and item.checkpoint.S == "SHARD_END") then
        io.stdout:write("VIOLATION ", shard_id, " started before its parent ", p, " ended\n")
        io.stdout:flush()
      end
    end
  end
end

local consumer = client:consumer {
  stream = o.stream, application = "lease-specs", worker_id = o.worker, store = store,
  idle_time_between_reads = 0.2, shard_sync_interval = 1, retry_delay = 0.05,
  stop_after_idle = o.stop_after_idle,
  handler = function(records, ctx)
    local t0 = kinesis.now()
    check_parents(ctx.shard_id)
    local t1 = kinesis.now()
    local lines = {}
    for i, r in ipairs(records) do
      local key, n = cdata.parse(r.Data)
      lines[i] = string.format("%s %s %s %s %s %s %.4f %.4f\n", o.worker, ctx.shard_id, r.SequenceNumber,
        tostring(r.SubSequenceNumber or "-"), key or "BAD", tostring(n or "-"), t0, t1)
    end
    out:write(table.concat(lines))
    out:flush()
  end,
}
io.stdout:write("STARTED\n")
io.stdout:flush()
local ok, err = consumer:run()
local s, l = consumer:stats(), store:stats()
io.stdout:write(string.format("DONE %s records=%d errors=%d takes=%d steals=%d lost=%d requests=%d\n",
  tostring(ok or err), s.records, s.errors, l.takes, l.steals, l.lost, l.requests))
out:close()
