-- Shard routing against a real server: on kinesis-local streams of 1, 3, 4,
-- 7 and 16 shards, map:lookup / map:lookup_hash (built from ListShards)
-- must predict the ShardId that PutRecord returns for 1000 random partition
-- keys (1-256 characters, ASCII and multi-byte UTF-8) and 100 random
-- explicit hash keys plus every shard's first and last key; and again after
-- SplitShard at split_point() and after MergeShards with map:adjacent().
-- A few thousand PutRecord calls: this spec takes about a minute.
local kinesis = require "kinesis"
local peers = require "support.peers"
local socket = require "socket"

local MAX = "340282366920938463463374607431768211455"
local COUNTS = { 1, 3, 4, 7, 16 }
local N_KEYS, N_HASHES = 1000, 100

-- Characters by UTF-8 length; includes combining, zero-width and the
-- highest code point, which are all legal in a partition key.
local WIDE = {
  { "\195\169", "\195\159", "\195\188", "\195\177", "\206\169", "\208\182", "\215\144", "\216\185", "\204\129" },
  { "\228\184\173", "\226\130\172", "\227\129\130", "\237\149\156", "\239\191\189", "\226\128\139", "\239\172\129" },
  { "\240\159\152\128", "\240\159\154\128", "\240\157\132\158", "\244\143\191\191" },
}

-- Length in characters, counted as UTF-16 units the way kinesis-local
-- counts them (a 4-byte character is 2; 256 of them would be refused).
local function random_key(i)
  local len = i == 1 and 1 or i == 2 and 256 or math.random(1, 256)
  local utf8_mode = i % 2 == 0
  local t, units = {}, 0
  while units < len do
    local ch, w = string.char(math.random(32, 126)), 1
    if utf8_mode and math.random() < 0.6 then
      local pool = WIDE[math.random(1, #WIDE)]
      ch = pool[math.random(1, #pool)]
      w = #ch == 4 and 2 or 1
    end
    if units + w <= len then
      t[#t + 1] = ch
      units = units + w
    end
  end
  return table.concat(t)
end

-- A random hash key as digits (no 128-bit code involved): mostly 39 digits,
-- as most of the key space is, sometimes shorter.
local function random_decimal()
  while true do
    local len = math.random() < 0.8 and 39 or math.random(1, 38)
    local t = { tostring(math.random(1, len == 39 and 3 or 9)) }
    for k = 2, len do t[k] = tostring(math.random(0, 9)) end
    local s = table.concat(t)
    if #s < 39 or s <= MAX then return s end
  end
end

-- Decimal string - 1 (s > "0"), digit by digit.
local function dec(s)
  local d, i = { s:byte(1, -1) }, #s
  while d[i] == 48 do d[i], i = 57, i - 1 end
  d[i] = d[i] - 1
  local r = string.char(table.unpack(d)):gsub("^0+(%d)", "%1")
  return r
end

describe("shard routing against kinesis-local", function()
  local srv, c

  lazy_setup(function()
    srv = peers.start("kinesis-local", { env = {
      SHARD_LIMIT = "500",
      CREATE_STREAM_DURATION = "50ms",
      SPLIT_SHARD_DURATION = "50ms",
      MERGE_SHARDS_DURATION = "50ms",
    } })
    c = peers.client(srv)
  end)

  lazy_teardown(function()
    if c and c.close then c:close() end
    if srv then srv.stop() end
  end)

  local function wait_active(name)
    for _ = 1, 200 do
      local out = assert(c:describe_stream_summary { StreamName = name })
      if out.StreamDescriptionSummary.StreamStatus == "ACTIVE" then return end
      socket.sleep(0.05)
    end
    error("stream " .. name .. " did not become ACTIVE")
  end

  -- Every page of ListShards, as a shard map of the open shards.
  local function current_map(name)
    local list, params = {}, { StreamName = name, MaxResults = 5 }
    repeat
      local out = assert(c:list_shards(params))
      for _, s in ipairs(out.Shards) do list[#list + 1] = s end
      params = { NextToken = out.NextToken }
    until type(out.NextToken) ~= "string"
    return assert(kinesis.shard_map(list))
  end

  local function expect(map, rec)
    return rec.ExplicitHashKey and map:lookup_hash(rec.ExplicitHashKey).ShardId
      or map:lookup(rec.PartitionKey).ShardId
  end

  -- PutRecord each record; returns the mismatches ({record, want, got}).
  local function put_each(name, map, records, misses)
    for _, rec in ipairs(records) do
      local out, err = c:put_record { StreamName = name, PartitionKey = rec.PartitionKey,
                                      ExplicitHashKey = rec.ExplicitHashKey, Data = "r" }
      assert(out, tostring(err))
      local want = expect(map, rec)
      if out.ShardId ~= want then misses[#misses + 1] = { rec, want, out.ShardId } end
    end
    return #records
  end

  -- PutRecords in batches of 500: each result entry carries its ShardId too.
  local function put_batched(name, map, records, misses)
    for i = 1, #records, 500 do
      local batch = {}
      for k = i, math.min(i + 499, #records) do
        batch[#batch + 1] = { PartitionKey = records[k].PartitionKey,
                              ExplicitHashKey = records[k].ExplicitHashKey, Data = "r" }
      end
      local out = assert(c:put_records { StreamName = name, Records = batch })
      assert.are.equal(0, out.FailedRecordCount or 0)
      for k, r in ipairs(out.Records) do
        local want = expect(map, batch[k])
        if r.ShardId ~= want then misses[#misses + 1] = { batch[k], want, r.ShardId } end
      end
    end
    return #records
  end

  local function assert_no_misses(misses, checked)
    local shown = {}
    for k = 1, math.min(5, #misses) do
      local rec, want, got = misses[k][1], misses[k][2], misses[k][3]
      shown[k] = string.format("%s: predicted %s, server %s",
        rec.ExplicitHashKey and ("hash " .. rec.ExplicitHashKey) or ("key " .. string.format("%q", rec.PartitionKey)),
        want, got)
    end
    assert(#misses == 0, #misses .. " of " .. checked .. " mispredicted:\n" .. table.concat(shown, "\n"))
  end

  local function boundary_records(map)
    local recs = {}
    for _, s in ipairs(map:shards()) do
      recs[#recs + 1] = { PartitionKey = "b", ExplicitHashKey = s.HashKeyRange.StartingHashKey }
      recs[#recs + 1] = { PartitionKey = "b", ExplicitHashKey = s.HashKeyRange.EndingHashKey }
    end
    return recs
  end

  for _, n in ipairs(COUNTS) do
    describe(n .. " shard(s)", function()
      local name = "routing-" .. n
      local keys, hashes = {}, {}
      math.randomseed(4000 + n)
      for i = 1, N_KEYS do keys[i] = { PartitionKey = random_key(i) } end
      for i = 1, N_HASHES do hashes[i] = { PartitionKey = "h" .. i, ExplicitHashKey = random_decimal() } end
      local map

      it("PutRecord lands every key and explicit hash key where map:lookup says", function()
        assert(c:create_stream { StreamName = name, ShardCount = n })
        wait_active(name)
        map = current_map(name)
        assert.are.equal(n, map:count())
        local misses, checked = {}, 0
        checked = checked + put_each(name, map, keys, misses)
        checked = checked + put_each(name, map, hashes, misses)
        checked = checked + put_each(name, map, boundary_records(map), misses)
        assert.are.equal(N_KEYS + N_HASHES + 2 * n, checked)
        assert_no_misses(misses, checked)
      end)

      it("after SplitShard at split_point", function()
        assert.is_truthy(map, "the stream was not created")
        local ordered = map:shards()
        local parent = ordered[math.floor((#ordered + 1) / 2)]
        local key = assert(kinesis.split_point(parent))
        assert(c:split_shard { StreamName = name, ShardToSplit = parent.ShardId, NewStartingHashKey = key })
        wait_active(name)
        map = current_map(name)
        assert.are.equal(n + 1, map:count())
        assert.is_nil(map:shard(parent.ShardId))
        -- the children split the parent's range exactly at key
        local upper = map:lookup_hash(key)
        local lower = map:lookup_hash(dec(key))
        assert.are_not.equal(upper, lower)
        assert.are.equal(parent.ShardId, upper.ParentShardId)
        assert.are.equal(parent.ShardId, lower.ParentShardId)
        assert.are.equal(key, upper.HashKeyRange.StartingHashKey)
        assert.are.equal(dec(key), lower.HashKeyRange.EndingHashKey)
        assert.are.equal(parent.HashKeyRange.StartingHashKey, lower.HashKeyRange.StartingHashKey)
        assert.are.equal(parent.HashKeyRange.EndingHashKey, upper.HashKeyRange.EndingHashKey)
        assert.are.equal(lower, (map:adjacent(upper)))

        local misses, checked = {}, 0
        checked = checked + put_each(name, map, boundary_records(map), misses)
        checked = checked + put_each(name, map, { table.unpack(keys, 1, 100) }, misses)
        checked = checked + put_batched(name, map, keys, misses)
        checked = checked + put_batched(name, map, hashes, misses)
        assert_no_misses(misses, checked)
      end)

      it("after MergeShards with a map:adjacent neighbour", function()
        assert.is_truthy(map, "the stream was not created")
        local first = map:shards()[1]
        local lower, upper = map:adjacent(first)
        assert.is_nil(lower)
        assert.is_truthy(upper)
        assert(c:merge_shards { StreamName = name, ShardToMerge = first.ShardId,
                                AdjacentShardToMerge = upper.ShardId })
        wait_active(name)
        map = current_map(name)
        assert.are.equal(n, map:count())
        local merged = map:lookup_hash("0")
        assert.are.equal(first.ShardId, merged.ParentShardId)
        assert.are.equal(upper.ShardId, merged.AdjacentParentShardId)
        assert.are.equal(upper.HashKeyRange.EndingHashKey, merged.HashKeyRange.EndingHashKey)

        local misses, checked = {}, 0
        checked = checked + put_each(name, map, boundary_records(map), misses)
        checked = checked + put_each(name, map, { table.unpack(keys, 101, 200) }, misses)
        checked = checked + put_batched(name, map, keys, misses)
        checked = checked + put_batched(name, map, hashes, misses)
        assert_no_misses(misses, checked)
      end)
    end)
  end
end)
