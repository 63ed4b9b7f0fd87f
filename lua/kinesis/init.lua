-- kinesis - Amazon Kinesis Data Streams for Lua.
-- The entry module: kinesis.new(config) builds a client whose methods are
-- every operation of the API; the hash-key and shard helpers of the C core
-- are re-exported here. Nothing is read or contacted at require time.

local client = require "kinesis.client"
local core = require "kinesis.core"

local runtime = require "kinesis.runtime"

local M = {
  _VERSION = core._VERSION,
  new = client.new,
  operations = client.operations,
  run = runtime.run,
  spawn = runtime.spawn,
  sleep = runtime.sleep,
  wait_all = runtime.wait_all,
  now = runtime.now,
}

-- hash keys and shard maps (C core through kinesis.shards)
local shards = require "kinesis.shards"
M.hash_key = shards.hash_key
M.shard_map = shards.shard_map
M.split_point = shards.split_point
M.even_ranges = shards.even_ranges

-- KPL-compatible aggregation (C codec through kinesis.kpl)
local kpl = require "kinesis.kpl"
M.aggregate = kpl.aggregate
M.deaggregate = kpl.deaggregate
M.aggregator = kpl.aggregator

M.checkpoints = require "kinesis.checkpoints"

-- kinesis.dynamodb (the lease table's client), loaded on first use
setmetatable(M, { __index = function(t, k)
  if k == "dynamodb" then
    local mod = require "kinesis.dynamodb"
    rawset(t, k, mod)
    return mod
  end
end })

return M
