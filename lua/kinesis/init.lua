-- kinesis - Amazon Kinesis Data Streams for Lua.
-- The entry module: kinesis.new(config) builds a client whose methods are
-- every operation of the API; the hash-key and shard helpers of the C core
-- are re-exported here. Nothing is read or contacted at require time.

local client = require "kinesis.client"
local core = require "kinesis.core"

local M = {
  _VERSION = core._VERSION,
  new = client.new,
  operations = client.operations,
}

-- hash keys and shard maps (kinesis.shards), when built
local ok, shards = pcall(require, "kinesis.shards")
if ok then
  M.hash_key = shards.hash_key
  M.shard_map = shards.shard_map
  M.split_point = shards.split_point
  M.even_ranges = shards.even_ranges
  require("kinesis.validate").u128_check = shards.u128_check
end

return M
