-- consume.lua - a consumer in its own process, for the specs that stop it
-- with a signal or kill -9 it and start it again. Each record handed to the
-- handler is appended to the output log as "shard seq sub key n" (or
-- "shard seq sub BAD" when not byte-exact), flushed before the handler
-- returns, so the log holds at least what was checkpointed. A shard handed
-- over before its parents ended prints a VIOLATION line.
--   lua5.4 consume.lua '<json options>'
-- options: endpoint, stream, store (file path), out, application,
--   checkpoint ("auto" | "per_record"), max_records, slow (seconds per batch),
--   fan_out, stop_after_idle
local cjson = require "cjson"
local kinesis = require "kinesis"
local peers = require "support.peers"
local cdata = require "support.cdata"

local o = cjson.decode(arg[1])
local client = assert(kinesis.new { endpoint = o.endpoint, region = peers.region, credentials = peers.credentials })
local out = assert(io.open(o.out, "a"))
local per_record = o.checkpoint == "per_record"

local store = kinesis.checkpoints.file { path = o.store }

-- Parents first, checked from the outside: the first time a shard reaches
-- the handler, each of its parents still in the stream must be at SHARD_END.
local checked = {}
local function check_parents(shard_id)
  if checked[shard_id] then return end
  checked[shard_id] = true
  local by_id = {}
  for s in client:items("list_shards", { StreamName = o.stream }) do
    if s then by_id[s.ShardId] = s end
  end
  local me = by_id[shard_id]
  for _, p in ipairs { me and me.ParentShardId, me and me.AdjacentParentShardId } do
    if p and by_id[p] then
      local cp = store:get(p)
      if not (cp and cp.sequence == "SHARD_END") then
        io.stdout:write("VIOLATION ", shard_id, " started before its parent ", p, " ended\n")
        io.stdout:flush()
      end
    end
  end
end

local consumer = client:consumer {
  stream = o.stream, application = o.application or "specs",
  store = store,
  checkpoint = per_record and "manual" or "auto",
  max_records = o.max_records, idle_time_between_reads = 0.2, shard_sync_interval = 1,
  retry_delay = 0.05, fan_out = o.fan_out, stop_after_idle = o.stop_after_idle,
  handler = function(records, ctx)
    check_parents(ctx.shard_id)
    local lines = {}
    for i, r in ipairs(records) do
      local key, n = cdata.parse(r.Data)
      lines[i] = string.format("%s %s %s %s %s\n", ctx.shard_id, r.SequenceNumber,
        tostring(r.SubSequenceNumber or "-"), key or "BAD", tostring(n or "-"))
    end
    out:write(table.concat(lines))
    out:flush()
    if o.slow then kinesis.sleep(o.slow) end
    if per_record then
      for _, r in ipairs(records) do assert(ctx:checkpoint(r)) end
    end
  end,
}
io.stdout:write("STARTED\n")
io.stdout:flush()
local ok, err = consumer:run()
local s = consumer:stats()
io.stdout:write(string.format("DONE %s records=%d expired=%d errors=%d state=%s on %s\n",
  tostring(ok or err), s.records, s.expired_iterators, s.errors, s.state,
  rawget(_G, "jit") and jit.version or _VERSION))
for _, e in ipairs(s.recent_errors) do io.stdout:write("ERROR ", e.where, " ", e.message, "\n") end
out:close()
