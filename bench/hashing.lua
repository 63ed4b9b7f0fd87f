-- bench/hashing.lua - routing speed on a 1,000-shard map: partition keys
-- hashed per second (kinesis.hash_key, MD5 to a decimal string), lookups by
-- partition key (map:lookup: hash + search) and by hash key
-- (map:lookup_hash: decimal parse + search), all through the binding.
--
--   lua5.4 bench/hashing.lua SECONDS
--
-- Prints { hash_key_rate, lookup_rate, lookup_hash_rate, shards, hwm_kb }.

local common = require "common"
local kinesis = require "kinesis"

local seconds = tonumber(arg[1]) or 0.3
local ranges = assert(kinesis.even_ranges(1000))
local shards = {}
for i, r in ipairs(ranges) do
  shards[i] = {
    ShardId = string.format("shardId-%012d", i - 1),
    HashKeyRange = r,
    SequenceNumberRange = { StartingSequenceNumber = "49651508112370573233364539185419153282036493009227382786" },
  }
end
local map = assert(kinesis.shard_map(shards))
assert(map:count() == 1000)

local K = 4096
local keys, hashes = {}, {}
for i = 1, K do
  keys[i] = string.format("user-%08d", i * 7919)
  hashes[i] = kinesis.hash_key(keys[i])
end
-- every lookup must land on the shard whose range holds the key
assert(map:lookup(keys[1]) == map:lookup_hash(hashes[1]))

local hash_key = kinesis.hash_key
local lookup, lookup_hash = map.lookup, map.lookup_hash
local function rate_over(f)
  local i = 0
  return common.rate(function()
    i = i % K + 1
    f(i)
  end, seconds, 256, 1024)
end

common.emit {
  shards = 1000,
  hash_key_rate = rate_over(function(i) hash_key(keys[i]) end),
  lookup_rate = rate_over(function(i) lookup(map, keys[i]) end),
  lookup_hash_rate = rate_over(function(i) lookup_hash(map, hashes[i]) end),
}
