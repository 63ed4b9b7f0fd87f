-- kinesis.shards: partition key -> hash key -> shard, and shard arithmetic.
-- Kinesis routes a record to the shard whose inclusive HashKeyRange holds
-- MD5(partition key) read as a big-endian unsigned 128-bit integer (or its
-- ExplicitHashKey). Lua numbers cannot hold these values: the C core
-- (src/u128.c, src/shardmap.c) does the arithmetic and Lua sees decimal
-- strings. Route with the ranges ListShards returns, never computed ones:
-- kinesis-local lays out a new stream 1-3 keys off from AWS and kinesalite.
local core = require "kinesis.core"

local type, error, ipairs, setmetatable = type, error, ipairs, setmetatable

local M = {}

-- Errors have the C core's shape, { code =, message = }, and print as
-- their message, whether the core or this file found the problem.
local Error = { __tostring = function(e) return e.message end }
local function fail(code, message)
  return nil, setmetatable({ code = code, message = message }, Error)
end

--- hash_key(partition_key) -> decimal string
-- MD5 of the key's bytes (UTF-8 as given, no normalization). Raises if
-- partition_key is not a string.
M.hash_key = core.hash_key

--- u128_check(value) -> true | nil, err (err.code "invalid_decimal", err.message)
-- Whether value is a hash key the service accepts: a decimal string of
-- digits only, no sign, no leading zero (except "0"), at most 2^128-1.
-- Never raises (request validation passes it whatever the caller sent).
M.u128_check = core.u128_check

--- even_ranges(n) -> { {StartingHashKey=, EndingHashKey=}, ... } | nil, err
-- [0, 2^128-1] cut into n contiguous ranges the way the service lays out a
-- new stream: starts at multiples of floor(2^128 / n), the last range ending
-- at 2^128-1. Useful to plan a resharding, not to route records.
M.even_ranges = core.hash_even_ranges

local function range_of(shard)
  if type(shard) ~= "table" then
    error("bad argument #1 to 'split_point' (table expected, got " .. type(shard) .. ")", 3)
  end
  -- A ListShards shard, or a bare range such as an even_ranges() entry.
  local range = shard.HashKeyRange or shard
  if type(range) ~= "table" then
    return nil, nil, "HashKeyRange is not a table"
  end
  return range.StartingHashKey, range.EndingHashKey
end

--- split_point(shard) -> NewStartingHashKey | nil, err
-- The key that halves the shard's range for SplitShard: the first key of
-- the upper half (2^127 for a range [0, 2^128-1]). shard is a ListShards
-- shard table or a {StartingHashKey=, EndingHashKey=} range.
function M.split_point(shard)
  local s, e, err = range_of(shard)
  local name = type(shard.ShardId) == "string" and shard.ShardId .. ": " or ""
  if err then return fail("invalid_shard", name .. err) end
  if type(s) ~= "string" or type(e) ~= "string" then
    return fail("invalid_shard", name .. "StartingHashKey and EndingHashKey must be decimal strings")
  end
  local key, why = core.hash_split_point(s, e)
  if not key then return fail(why.code, name .. why.message) end
  return key
end

-- A closed shard (split or merged away) has an EndingSequenceNumber. Open
-- ones have none, or a JSON null (kinesis-local sends
-- "EndingSequenceNumber": null), so only a string counts.
local function is_open(shard)
  local r = type(shard) == "table" and shard.SequenceNumberRange
  return not (type(r) == "table" and type(r.EndingSequenceNumber) == "string")
end

--- shard_map(shards[, opts]) -> map | nil, err
-- shards: the Shards list of ListShards/DescribeStream (every page). Open
-- shards only unless opts.include_closed; the shards kept must tile
-- [0, 2^128-1] exactly, so a missing page (a gap) or a closed parent next to
-- its children (an overlap) is an error naming the shards involved, as is a
-- bad decimal. The map (a "kinesis.shard_map" userdata) answers, in O(log n):
--   map:lookup(partition_key)  -> shard table
--   map:lookup_hash(decimal)   -> shard table | nil, err
--   map:shards()               -> shard tables in hash key order
--   map:shard(shard_id)        -> shard table | nil
--   map:adjacent(shard_or_id)  -> lower, upper neighbour (nil at either end)
--                                 | nil, nil, err if the shard is not mapped
--   map:count() / #map         -> number of shards
-- The tables returned are the very tables passed in.
function M.shard_map(shards, opts)
  if type(shards) ~= "table" then
    error("bad argument #1 to 'shard_map' (table expected, got " .. type(shards) .. ")", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'shard_map' (table expected, got " .. type(opts) .. ")", 2)
  end
  local include_closed = opts ~= nil and opts.include_closed
  local list, n = {}, 0
  for _, shard in ipairs(shards) do
    if include_closed or is_open(shard) then
      n = n + 1
      list[n] = shard
    end
  end
  if n == 0 then
    return fail("no_shards", include_closed and "no shards to map" or "no open shards to map")
  end
  return core.shardmap_new(list)
end

return M
